"""Triton requests with batch size > 1, served as the TensorRT-LLM backend serves them.

The backend splits a batched Triton request into one executor request per row (input_ids cut to each
row's input_lengths, every other tensor sliced by row), refuses batch > 1 unless the model is
decoupled, and answers row by row on the request's one response sender: each response carries
batch_index (when asked for), and only the last row's last response carries the final flag.
https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/utils.cc#L158-L217
https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/utils.cc#L895-L908
https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L1366-L1372

Unit tests of the parsing first, then the same engine files inside a real tritonserver.
"""

from __future__ import annotations

import contextlib
import queue
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.reference_engine import (
    ENGINE_DIR,
    FLAGGED_OUTPUTS,
    POLL_TIMEOUT_S,
    RESPONSE_ORDER,
    Server,
    add_engine_model,
    running_server,
    write_tokenizer,
)

sys.path.insert(0, str(ENGINE_DIR))

from reference_contract import (  # noqa: E402
    EnqueueError,
    parse_batch,
    read_engine_config,
    response_arrays,
    split_batch,
)
from reference_kv import KvBlockPool  # noqa: E402
from reference_lm import ReferenceEngineError, ReferenceLM, natural_length, read_vocabulary  # noqa: E402
from reference_scheduler import BatcherSettings, InflightBatcher  # noqa: E402

WEIGHTS_SEED = 7  # DEFAULT_PARAMETERS["reference_seed"] of the test models
DECOUPLED_ONLY = "Batch size > 1 requires the tensorrt_llm backend to be using decoupled transaction policy"
SHORT = [40, 41, 42]
LONG = [50, 51, 52, 53, 54, 55, 56]


def padded(*prompts: list[int], pad: int = 0) -> np.ndarray:
    """Ragged prompts as one [batch, max_len] tensor, as a client pads them."""
    width = max(len(p) for p in prompts)
    return np.array([p + [pad] * (width - len(p)) for p in prompts], np.int32)


def column(*values, dtype=np.int32) -> np.ndarray:
    return np.array([[v] for v in values], dtype)


# ------------------------------------------------------------------------------------------ units


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> ReferenceLM:
    tokenizer = write_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return ReferenceLM(read_vocabulary(str(tokenizer)), seed=WEIGHTS_SEED)


def _config(tmp_path: Path, decoupled: bool = True):
    model_config = {
        "name": "m_tensorrt_llm",
        "max_batch_size": 8,
        "model_transaction_policy": {"decoupled": decoupled},
        "parameters": {"tokenizer_dir": {"string_value": str(tmp_path)}},
    }
    return read_engine_config(model_config, "/m")


def _batch_inputs(**extra: np.ndarray) -> dict[str, np.ndarray]:
    # input_lengths / request_output_len as the backend sees them: config.pbtxt reshapes [1] to [].
    return {
        "input_ids": padded(SHORT, LONG, pad=9),
        "input_lengths": np.array([len(SHORT), len(LONG)], np.int32),
        "request_output_len": np.array([4, 6], np.int32),
        **extra,
    }


def test_each_row_gets_its_own_prompt_lengths_and_settings(tmp_path, lm):
    inputs = _batch_inputs(end_id=np.array([-1, 3], np.int32), temperature=np.array([0.0, 0.5], np.float32))
    rows = parse_batch(inputs, {}, _config(tmp_path), lm, request_id="req-7")
    assert [r.engine_request.prompt.tolist() for r in rows] == [SHORT, LONG]  # padding cut per row
    assert [r.engine_request.params.max_new_tokens for r in rows] == [4, 6]
    assert [r.engine_request.params.end_id for r in rows] == [None, 3]
    assert [r.engine_request.params.temperature for r in rows] == [0.0, 0.5]
    assert [(r.batch_index, r.batch_size) for r in rows] == [(0, 2), (1, 2)]
    assert {r.engine_request.request_id for r in rows} == {"req-7"}  # a stop request reaches every row


def test_a_row_equals_the_same_prompt_sent_alone(tmp_path, lm):
    config = _config(tmp_path)
    (alone,) = parse_batch(
        {
            "input_ids": np.array([LONG], np.int32),
            "input_lengths": np.array([7], np.int32),
            "request_output_len": np.array([6], np.int32),
        },
        {},
        config,
        lm,
    )
    row = parse_batch(_batch_inputs(), {}, config, lm)[1]
    assert row.engine_request.prompt.tolist() == alone.engine_request.prompt.tolist()
    assert row.engine_request.params == alone.engine_request.params
    assert (alone.batch_index, alone.batch_size) == (0, 1)


def test_batch_rows_accept_input_lengths_with_a_trailing_dim_and_share_streaming(tmp_path, lm):
    inputs = _batch_inputs(input_lengths=column(3, 7), streaming=np.array([[True], [False]]))
    rows = split_batch(inputs, _config(tmp_path))
    assert len(rows) == 2 and all(row["input_ids"].shape == (1, 7) for row in rows)
    # streaming is read from the request as a whole (its first element), not per row
    assert [r.streaming for r in parse_batch(inputs, {}, _config(tmp_path), lm)] == [True, True]


def test_stop_words_are_sliced_by_row(tmp_path, lm):
    words = np.array([[[41, 0], [1, -1]], [[52, 53], [2, -1]]], np.int32)
    rows = parse_batch(_batch_inputs(stop_words_list=words), {}, _config(tmp_path), lm)
    assert [r.engine_request.params.stop_words for r in rows] == [((41,),), ((52, 53),)]


@pytest.mark.parametrize(
    ("inputs", "decoupled", "message"),
    [
        # the backend's own checks, in its order: split (needs input_lengths), decoupled, streaming
        (
            {"input_ids": padded(SHORT, LONG), "request_output_len": np.array([1, 1])},
            False,
            "input lengths tensor not provided",
        ),
        (_batch_inputs(), False, DECOUPLED_ONLY),
        (_batch_inputs(streaming=np.array([True, True])), False, DECOUPLED_ONLY),
        (
            _batch_inputs(input_lengths=np.zeros((2, 2), np.int32)),
            True,
            "Expected inputLengths tensors to have 1 dimension",
        ),
        (
            _batch_inputs(end_id=np.array([1], np.int32)),
            True,
            "input end_id has batch size 1 but input_ids has 2",
        ),
    ],
)
def test_the_backend_refuses_what_it_refuses(tmp_path, lm, inputs, decoupled, message):
    with pytest.raises(EnqueueError, match=message):
        parse_batch(inputs, {}, _config(tmp_path, decoupled=decoupled), lm)


def test_one_bad_row_fails_the_whole_request(tmp_path, lm):
    inputs = _batch_inputs(input_lengths=np.array([3, 9], np.int32))  # row 1: more than its 7 ids
    with pytest.raises(ReferenceEngineError, match="input_lengths is 9 but input_ids holds 7 tokens"):
        parse_batch(inputs, {}, _config(tmp_path), lm)


def test_batch_one_on_a_non_decoupled_model_is_still_served(tmp_path, lm):
    inputs = {"input_ids": np.array([SHORT], np.int32), "request_output_len": np.array([2], np.int32)}
    (row,) = parse_batch(inputs, {}, _config(tmp_path, decoupled=False), lm)
    assert row.engine_request.prompt.tolist() == SHORT and row.batch_size == 1


class _Sink:
    def __init__(self) -> None:
        self.tokens: list[int] = []

    def deliver(self, sequence, tokens, final):
        self.tokens += tokens
        return True

    def is_cancelled(self):
        return False

    def cancelled(self, sequence):
        pass

    def failed(self, message):
        pass


def test_rows_are_queued_together_or_not_at_all(tmp_path, lm):
    config = _config(tmp_path)
    batcher = InflightBatcher(lm, KvBlockPool(4, 8, True), BatcherSettings(max_active=8))
    fits, too_big = parse_batch(_batch_inputs(request_output_len=np.array([4, 40], np.int32)), {}, config, lm)
    with pytest.raises(ReferenceEngineError, match="whole cache holds 4"):
        batcher.submit_all([(fits.engine_request, _Sink()), (too_big.engine_request, _Sink())])
    assert not batcher.step()  # nothing was queued, not even the row that fits
    rows = parse_batch(_batch_inputs(), {}, config, lm)
    sinks = [_Sink(), _Sink()]
    batcher.submit_all([(r.engine_request, s) for r, s in zip(rows, sinks)])
    while batcher.step():
        pass
    assert [len(s.tokens) for s in sinks] == [4, 6]


def test_batch_index_is_sent_only_for_a_batch_and_in_the_backend_order(tmp_path, lm):
    config = _config(tmp_path)
    batcher = InflightBatcher(lm, KvBlockPool(64, 8, True), BatcherSettings(max_active=8))
    rows = parse_batch(_batch_inputs(return_log_probs=np.array([True, True])), {}, config, lm)
    sequences = batcher.submit_all([(r.engine_request, _Sink()) for r in rows])
    while batcher.step():
        pass
    arrays = response_arrays(sequences[1], rows[1], [], frozenset(), None, True, tuple(RESPONSE_ORDER), FLAGGED_OUTPUTS)
    assert list(arrays) == [
        "output_ids",
        "sequence_length",
        "output_log_probs",
        "cum_log_probs",
        "batch_index",
    ]
    assert arrays["batch_index"].tolist() == [[1]] and arrays["batch_index"].dtype == np.int32
    not_asked = frozenset({"output_ids", "sequence_length"})
    assert "batch_index" not in response_arrays(sequences[1], rows[1], [], not_asked, None, True, (), FLAGGED_OUTPUTS)
    (alone,) = parse_batch(
        {"input_ids": np.array([SHORT], np.int32), "request_output_len": np.array([2], np.int32)},
        {},
        config,
        lm,
    )
    single = batcher.submit(alone.engine_request, _Sink())
    while batcher.step():
        pass
    assert "batch_index" not in response_arrays(single, alone, [], frozenset(), None, True, (), FLAGGED_OUTPUTS)


# ------------------------------------------------------------------------------------------ tritonserver


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    root = tmp_path_factory.mktemp("reference-engine-batch")
    tokenizer = write_tokenizer(root / "tokenizer")
    repo = root / "repo"
    add_engine_model(repo, "eng", tokenizer)
    add_engine_model(repo, "plain", tokenizer, decoupled=False)
    add_engine_model(repo, "slow", tokenizer, reference_decode_tokens_per_s="100")
    with running_server(repo, root / "server.log") as running:
        yield running


def _triton_type(array: np.ndarray) -> str:
    types = {np.int32: "INT32", np.bool_: "BOOL", np.uint64: "UINT64", np.float32: "FP32"}
    return types[array.dtype.type]


def _inputs(arrays: dict[str, np.ndarray]) -> list:
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), _triton_type(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _outputs(names: tuple[str, ...] | None) -> list | None:
    return None if names is None else [grpcclient.InferRequestedOutput(n) for n in names]


def stream_all(
    server: Server, model: str, arrays: dict[str, np.ndarray], outputs: tuple[str, ...] | None = None
) -> list[tuple[object, bool]]:
    """Every response of one ModelStreamInfer request (empty final responses included), with its
    final flag, up to the final one."""
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        client.async_stream_infer(
            model, _inputs(arrays), outputs=_outputs(outputs), enable_empty_final_response=True
        )
        collected = []
        while True:
            result, error = responses.get(timeout=POLL_TIMEOUT_S)
            assert error is None, str(error)
            final = result.get_response().parameters["triton_final_response"].bool_param
            collected.append((result, final))
            if final:
                return collected
    finally:
        client.stop_stream()
        client.close()


def _ids(result) -> list[int]:
    return result.as_numpy("output_ids").reshape(-1).tolist()


def _row(result) -> int:
    index = result.as_numpy("batch_index")
    assert index.shape == (1, 1)
    return int(index[0, 0])


def alone(server: Server, prompt: list[int], max_tokens: int, **extra: np.ndarray) -> list[list[int]]:
    """The responses' token lists of a batch-1 request for one prompt."""
    arrays = {
        "input_ids": np.array([prompt], np.int32),
        "input_lengths": column(len(prompt)),
        "request_output_len": column(max_tokens),
        **extra,
    }
    return [_ids(r) for r, _ in stream_all(server, "eng", arrays) if r.get_response().outputs]


def test_a_batch_of_two_is_answered_row_by_row_with_one_final_flag(server):
    natural = natural_length(WEIGHTS_SEED, np.array(LONG, np.int32))
    arrays = {
        "input_ids": padded(SHORT, LONG, pad=9),
        "input_lengths": column(len(SHORT), len(LONG)),
        "request_output_len": column(5, natural + 4),
        "end_id": column(2, -1),  # row 1 runs past its natural end: no end id
        "seed": column(3, 4, dtype=np.uint64),
        "temperature": column(0.9, 0.7, dtype=np.float32),
        "runtime_top_k": column(40, 20),
    }
    responses = stream_all(server, "eng", arrays)
    assert [final for _, final in responses] == [False, True]  # the final flag comes once, last
    by_row = {_row(result): _ids(result) for result, _ in responses}
    assert sorted(by_row) == [0, 1]
    assert [by_row[0]] == alone(
        server,
        SHORT,
        5,
        end_id=column(2),
        seed=column(3, dtype=np.uint64),
        temperature=column(0.9, dtype=np.float32),
        runtime_top_k=column(40),
    )
    assert [by_row[1]] == alone(
        server,
        LONG,
        natural + 4,
        end_id=column(-1),
        seed=column(4, dtype=np.uint64),
        temperature=column(0.7, dtype=np.float32),
        runtime_top_k=column(20),
    )
    assert len(by_row[1]) == natural + 4  # exclude_input_in_output is set on the test models


def test_a_streamed_batch_interleaves_rows_and_ends_once(server):
    arrays = {
        "input_ids": padded(LONG, SHORT),
        "input_lengths": column(len(LONG), len(SHORT)),
        "request_output_len": column(6, 9),
        "streaming": column(True, True, dtype=np.bool_),
    }
    responses = stream_all(server, "eng", arrays)
    finals = [final for _, final in responses]
    assert finals.count(True) == 1 and finals[-1]
    chunks: dict[int, list[list[int]]] = {0: [], 1: []}
    for result, _ in responses:
        chunks[_row(result)].append(_ids(result))
    assert chunks[0] == alone(server, LONG, 6, streaming=column(True, dtype=np.bool_)) and len(chunks[0]) == 6
    assert (
        chunks[1] == alone(server, SHORT, 9, streaming=column(True, dtype=np.bool_)) and len(chunks[1]) == 9
    )
    assert sorted(_row(r) for r, _ in responses[:4]) == [0, 0, 1, 1]  # the rows run side by side


def test_batch_index_only_when_asked_for(server):
    arrays = {
        "input_ids": padded(SHORT, LONG),
        "input_lengths": column(len(SHORT), len(LONG)),
        "request_output_len": column(2, 2),
    }
    responses = stream_all(server, "eng", arrays, outputs=("output_ids", "sequence_length"))
    assert len(responses) == 2
    for result, _ in responses:
        assert [o.name for o in result.get_response().outputs] == ["output_ids", "sequence_length"]


def test_a_batch_on_a_non_decoupled_model_gets_the_backend_error(server):
    client = grpcclient.InferenceServerClient(server.grpc)
    arrays = {
        "input_ids": padded(SHORT, LONG),
        "input_lengths": column(len(SHORT), len(LONG)),
        "request_output_len": column(2, 2),
    }
    try:
        with pytest.raises(InferenceServerException, match=DECOUPLED_ONLY) as caught:
            client.infer("plain", _inputs(arrays))
        assert caught.value.status() == "StatusCode.INTERNAL"  # enqueue's TRITONSERVER_ERROR_INTERNAL
        one = {name: array[:1] for name, array in arrays.items()}
        assert client.infer("plain", _inputs(one)).as_numpy("output_ids").shape == (1, 1, 2)
    finally:
        client.close()


def test_stop_ends_every_row_of_a_batch(server):
    responses: queue.Queue = queue.Queue()
    answers: queue.Queue = queue.Queue()
    running = grpcclient.InferenceServerClient(server.grpc)
    stopper = grpcclient.InferenceServerClient(server.grpc)
    arrays = {
        "input_ids": padded(SHORT, LONG),
        "input_lengths": column(len(SHORT), len(LONG)),
        "request_output_len": column(1000, 1000),
        "end_id": column(-1, -1),
        "streaming": column(True, True, dtype=np.bool_),
    }
    try:
        running.start_stream(callback=lambda result, error: responses.put((result, error)))
        running.async_stream_infer("slow", _inputs(arrays), request_id="batch-stop")
        for _ in range(4):
            result, error = responses.get(timeout=POLL_TIMEOUT_S)
            assert error is None, str(error)
        stop = {
            "input_ids": np.array([[1]], np.int32),
            "input_lengths": column(1),
            "request_output_len": column(1),
            "stop": column(True, dtype=np.bool_),
        }
        stopper.start_stream(callback=lambda result, error: answers.put((result, error)))
        stopper.async_stream_infer("slow", _inputs(stop), request_id="batch-stop")
        result, error = answers.get(timeout=POLL_TIMEOUT_S)
        assert error is None, str(error)
        # Each row ends with a last response of no new token (the executor's final result of a
        # cancelled request); only the second of them carries the final flag.
        ended: list[tuple[int, bool]] = []
        while True:
            result, error = responses.get(timeout=POLL_TIMEOUT_S)
            assert error is None, str(error)
            final = result.get_response().parameters["triton_final_response"].bool_param
            if not _ids(result):
                ended.append((_row(result), final))
            if final:
                break
        assert sorted(row for row, _ in ended) == [0, 1] and [f for _, f in ended] == [False, True]
        with contextlib.suppress(queue.Empty):  # nothing comes after the final response
            extra = responses.get(timeout=0.5)
            pytest.fail(f"a response after the final one: {extra}")
    finally:
        for client in (running, stopper):
            client.stop_stream()
            client.close()
