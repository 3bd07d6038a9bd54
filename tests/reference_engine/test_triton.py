"""The reference engine inside real tritonserver processes (CPU build from the nvidia-pytriton wheel),
talked to over HTTP (/generate, /generate_stream) and gRPC (ModelStreamInfer), as the ensemble, BLS
and router will. Two servers: disaggregated tests hand a context_only blob from one to the other."""

from __future__ import annotations

import contextlib
import queue
import sys
import threading

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.reference_engine import (
    ENGINE_DIR,
    POLL_TIMEOUT_S,
    RESPONSE_ORDER,
    GenerateError,
    Server,
    add_engine_model,
    flat_ids,
    generate,
    generate_body,
    generate_stream,
    metric_value,
    running_server,
    wait_for,
    write_tokenizer,
)

sys.path.insert(0, str(ENGINE_DIR))
from reference_lm import natural_length, read_vocabulary  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.slow]

WEIGHTS_SEED = 7  # DEFAULT_PARAMETERS["reference_seed"]
PROMPT = [40, 41, 42, 43, 44, 45, 46]
SAMPLED = {"temperature": [0.9], "runtime_top_k": [40], "runtime_top_p": [0.95]}


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("reference-engine")
    tokenizer = write_tokenizer(root / "tokenizer")
    a, b = root / "repo-a", root / "repo-b"
    add_engine_model(a, "eng", tokenizer)
    add_engine_model(a, "legacy", tokenizer, era="0.19", decoupled=False)
    add_engine_model(a, "slow", tokenizer, reference_decode_tokens_per_s="100")
    add_engine_model(a, "tight", tokenizer, max_batch_size=4, reference_kv_blocks="4")
    add_engine_model(b, "eng", tokenizer)  # the decode side: same weights, another process
    add_engine_model(b, "otherseed", tokenizer, reference_seed="8")
    with contextlib.ExitStack() as stack:
        yield {
            "a": stack.enter_context(running_server(a, root / "server-a.log")),
            "b": stack.enter_context(running_server(b, root / "server-b.log")),
            "tokenizer": tokenizer,
        }


def stream_tokens(server: Server, model: str, body: dict) -> list[int]:
    return [
        t for event in generate_stream(server, model, {**body, "streaming": [True]}) for t in flat_ids(event)
    ]


def grpc_stream(
    server: Server, model: str, arrays: dict[str, np.ndarray], parameters: dict | None = None
) -> list:
    """Send one request over ModelStreamInfer and collect its responses up to the final one."""
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        inputs = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), _triton_type(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        client.async_stream_infer(model, inputs, parameters=parameters, enable_empty_final_response=True)
        results = []
        while True:
            result, error = responses.get(timeout=POLL_TIMEOUT_S)
            if error is not None:
                raise GenerateError(400, str(error))
            final = result.get_response().parameters["triton_final_response"].bool_param
            if result.get_response().outputs:
                results.append(result)
            if final:
                return results
    finally:
        client.stop_stream()
        client.close()


def _triton_type(array: np.ndarray) -> str:
    types = {np.int32: "INT32", np.bool_: "BOOL", np.uint64: "UINT64", np.float32: "FP32"}
    return types[array.dtype.type]


def engine_arrays(prompt: list[int], max_tokens: int, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.array([prompt], np.int32),
        "input_lengths": np.array([[len(prompt)]], np.int32),
        "request_output_len": np.array([[max_tokens]], np.int32),
        **extra,
    }


# ------------------------------------------------------------------------------------------ tokens


def test_same_prompt_and_seed_give_the_same_tokens(servers):
    body = generate_body(PROMPT, 40, seed=[3], **SAMPLED)
    first = flat_ids(generate(servers["a"], "eng", body))
    assert len(first) == 40
    assert flat_ids(generate(servers["a"], "eng", body)) == first
    assert flat_ids(generate(servers["b"], "eng", body)) == first  # another process, same weights
    assert flat_ids(generate(servers["a"], "eng", {**body, "seed": [4]})) != first


def test_streaming_and_non_streaming_agree_over_http_and_grpc(servers):
    body = generate_body(PROMPT, 30, seed=[5], **SAMPLED)
    whole = flat_ids(generate(servers["a"], "eng", body))
    events = generate_stream(servers["a"], "eng", {**body, "streaming": [True]})
    assert len(events) == 30 and [flat_ids(e) for e in events] == [[t] for t in whole]
    arrays = engine_arrays(
        PROMPT,
        30,
        seed=np.array([[5]], np.uint64),
        streaming=np.array([[True]]),
        temperature=np.array([[0.9]], np.float32),
        runtime_top_k=np.array([[40]], np.int32),
        runtime_top_p=np.array([[0.95]], np.float32),
    )
    with_grpc = grpc_stream(servers["a"], "eng", arrays)
    assert [r.as_numpy("output_ids").reshape(-1).tolist() for r in with_grpc] == [[t] for t in whole]


def test_0_19_names_on_a_non_decoupled_model(servers):
    new = generate_body(PROMPT, 20, seed=[9], min_tokens=[3], **SAMPLED)
    old = generate_body(PROMPT, 20, random_seed=[9], min_length=[3], **SAMPLED)
    assert flat_ids(generate(servers["a"], "legacy", old)) == flat_ids(generate(servers["a"], "eng", new))
    with pytest.raises(
        GenerateError, match="Streaming is only supported if model is deployed using decoupled mode"
    ):
        generate(servers["a"], "legacy", {**old, "streaming": [True]})


def test_prompt_is_in_the_output_unless_excluded_and_token_counts_on_request(servers):
    body = generate_body(
        PROMPT,
        6,
        exclude_input_in_output=[False],
        return_num_input_tokens=[True],
        return_num_output_tokens=[True],
    )
    result = generate(servers["a"], "eng", body)
    ids = flat_ids(result)
    assert ids[: len(PROMPT)] == PROMPT and len(ids) == len(PROMPT) + 6
    assert result["sequence_length"] == len(ids)
    assert (result["num_input_tokens"], result["num_output_tokens"]) == (len(PROMPT), 6)
    assert "num_input_tokens" not in generate(servers["a"], "eng", generate_body(PROMPT, 6))


def test_max_tokens_are_exact_and_min_tokens_move_the_natural_end(servers):
    vocab = read_vocabulary(str(servers["tokenizer"]))
    natural = natural_length(WEIGHTS_SEED, np.array(PROMPT, np.int32))
    assert len(flat_ids(generate(servers["a"], "eng", generate_body(PROMPT, 37)))) == 37
    assert len(flat_ids(generate(servers["a"], "eng", generate_body(PROMPT, natural + 20)))) == natural
    pushed = generate(servers["a"], "eng", generate_body(PROMPT, natural + 20, min_tokens=[natural + 9]))
    assert len(flat_ids(pushed)) == natural + 9
    never = generate(servers["a"], "eng", generate_body(PROMPT, natural + 4, end_id=[-1]))
    assert len(flat_ids(never)) == natural + 4
    assert vocab.eos_id not in flat_ids(pushed)


def test_stop_words_end_the_output_and_bad_words_are_banned(servers):
    free = [
        int(t)
        for r in grpc_stream(servers["a"], "eng", engine_arrays(PROMPT, 30))
        for t in r.as_numpy("output_ids").reshape(-1)
    ]
    stop = np.array([[[free[8], free[9]], [2, -1]]], np.int32)
    stopped = grpc_stream(servers["a"], "eng", engine_arrays(PROMPT, 30, stop_words_list=stop))
    assert stopped[-1].as_numpy("output_ids").reshape(-1).tolist() == free[:10]
    bad = np.array([[[free[4]], [1]]], np.int32)
    banned = grpc_stream(servers["a"], "eng", engine_arrays(PROMPT, 30, bad_words_list=bad))
    tokens = banned[-1].as_numpy("output_ids").reshape(-1).tolist()
    assert tokens[:4] == free[:4] and free[4] not in tokens


# ------------------------------------------------------------------------------------------ backend fidelity


def _output_names(server: Server, model: str, arrays: dict[str, np.ndarray]) -> list[str]:
    (result,) = grpc_stream(server, model, arrays)
    return [output.name for output in result.get_response().outputs]


def test_outputs_come_in_the_backend_order_and_only_when_asked(servers):
    plain = _output_names(servers["a"], "eng", engine_arrays(PROMPT, 4))
    assert plain == ["output_ids", "sequence_length"]  # no batch_index for batch 1, no perf metrics
    flags = {name: np.array([[True]]) for name in ("return_perf_metrics", "return_num_input_tokens")}
    asked = _output_names(servers["a"], "eng", engine_arrays(PROMPT, 4, **flags))
    expected = [
        "output_ids",
        "sequence_length",
        "num_input_tokens",
        "kv_cache_alloc_new_blocks",
        "kv_cache_reused_blocks",
        "kv_cache_alloc_total_blocks",
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
    ]
    assert asked == expected and asked == [n for n in RESPONSE_ORDER if n in asked]


def _stream_request(client, model: str, arrays: dict[str, np.ndarray], request_id: str, **options) -> None:
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), _triton_type(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client.async_stream_infer(model, inputs, request_id=request_id, **options)


def test_stop_true_gets_an_empty_success_and_the_stopped_request_ends_normally(servers):
    server = servers["a"]
    before = _outcome(server, "slow", "cancelled")
    original: queue.Queue = queue.Queue()
    running = grpcclient.InferenceServerClient(server.grpc)
    stopper = grpcclient.InferenceServerClient(server.grpc)
    answers: queue.Queue = queue.Queue()
    try:
        running.start_stream(callback=lambda result, error: original.put((result, error)))
        _stream_request(
            running, "slow", engine_arrays(PROMPT, 1000, streaming=np.array([[True]])), "to-stop-1"
        )
        for _ in range(3):
            result, error = original.get(timeout=POLL_TIMEOUT_S)
            assert error is None
        # Without enable_empty_final_response a bare "final" flag never reaches the client: the
        # backend answers the stop request with a real (empty) response, and so must we.
        stopper.start_stream(callback=lambda result, error: answers.put((result, error)))
        _stream_request(stopper, "slow", engine_arrays([1], 1, stop=np.array([[True]])), "to-stop-1")
        result, error = answers.get(timeout=POLL_TIMEOUT_S)
        assert error is None and not result.get_response().outputs, str(error)
        assert result.get_response().parameters["triton_final_response"].bool_param
        tokens = 3
        while True:
            result, error = original.get(timeout=POLL_TIMEOUT_S)
            assert error is None, error  # not "request cancelled"
            tokens += result.as_numpy("output_ids").size
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
        assert tokens < 1000
    finally:
        for client in (running, stopper):
            client.stop_stream()
            client.close()
    wait_for(lambda: _outcome(server, "slow", "cancelled") >= before + 1, "the stop to be counted")


def test_stop_without_a_request_id_is_an_error(servers):
    with pytest.raises(GenerateError, match="Trying to stop a request but request ID is not provided"):
        grpc_stream(servers["a"], "slow", engine_arrays([1], 1, stop=np.array([[True]])))


def test_models_the_real_backend_would_not_load_do_not_load(tmp_path, servers):
    repo = tmp_path / "repo"
    add_engine_model(repo, "fine", servers["tokenizer"])
    add_engine_model(repo, "noguide", servers["tokenizer"], drop=("guided_decoding_backend",))
    add_engine_model(repo, "yesbool", servers["tokenizer"], enable_kv_cache_reuse="yes")
    (add_engine_model(repo, "unrendered", servers["tokenizer"]) / "1" / "backend_contract.json").unlink()
    with running_server(
        repo, tmp_path / "server.log", "--exit-on-error=false", "--strict-readiness=false"
    ) as server:
        index = httpx.post(
            f"http://{server.http}/v2/repository/index", json={}, timeout=POLL_TIMEOUT_S
        ).json()
    models = {entry["name"]: entry for entry in index}
    assert models["fine"]["state"] == "READY"
    expected = {
        "noguide": "unexpected error when creating modelInstanceState: Cannot find parameter with name: guided_decoding_backend",
        "yesbool": "parameter enable_kv_cache_reuse='yes': Cannot convert yes to a boolean.",
        "unrendered": "not rendered by tritonstack",
    }
    for name, message in expected.items():
        assert models[name]["state"] == "UNAVAILABLE" and message in models[name]["reason"], models[name]


# ------------------------------------------------------------------------------------------ disaggregated


def test_context_only_then_generation_only_on_another_server_equals_aggregated(servers):
    body = generate_body(PROMPT * 3, 25, seed=[21], **SAMPLED)
    aggregated = stream_tokens(servers["a"], "eng", body)
    context = generate(servers["a"], "eng", {**body, "request_type": "context_only"})
    assert flat_ids(context) == aggregated[:1]
    blob = context["context_phase_params"]
    assert b"tritonstack reference engine" in bytes(blob)
    resumed = stream_tokens(
        servers["b"], "eng", {**body, "context_phase_params": blob, "request_type": "generation_only"}
    )
    assert resumed == aggregated  # the first token again, then the rest


def test_bad_or_foreign_blobs_are_refused_and_the_server_keeps_serving(servers):
    body = generate_body(PROMPT, 10)
    blob = generate(servers["a"], "eng", {**body, "request_type": "context_only"})["context_phase_params"]
    flipped = list(blob)
    flipped[30] ^= 0x01
    cases = [
        ({**body, "context_phase_params": flipped}, "eng", "checksum mismatch"),
        (
            {**body, "context_phase_params": list(range(64))},
            "eng",
            "not produced by a tritonstack reference engine",
        ),
        ({**generate_body(PROMPT[:-1], 10), "context_phase_params": blob}, "eng", "belong to another prompt"),
        ({**body, "context_phase_params": blob}, "otherseed", "other weights"),
        (body, "eng", "needs the context_phase_params input"),
    ]
    for request, model, message in cases:
        with pytest.raises(GenerateError, match=message):
            stream_tokens(servers["b"], model, {**request, "request_type": "generation_only"})
    assert len(stream_tokens(servers["b"], "eng", body)) == 10


# ------------------------------------------------------------------------------------------ scheduling


def _outcome(server: Server, model: str, outcome: str) -> float:
    value = metric_value(
        server.metrics_text(), "tritonstack_reference_engine_requests", model=model, outcome=outcome
    )
    return value or 0.0


def _kv_used(server: Server, model: str) -> float | None:
    return metric_value(
        server.metrics_text(), "nv_trt_llm_kv_cache_block_metrics", model=model, kv_cache_block_type="used"
    )


def test_client_disconnects_cancel_the_sequence_and_free_its_blocks(servers):
    server = servers["a"]
    before = _outcome(server, "slow", "cancelled")
    # HTTP: close the SSE stream after three tokens.
    url = f"http://{server.http}/v2/models/slow/generate_stream"
    with httpx.stream(
        "POST", url, json=generate_body(PROMPT, 1000, streaming=[True]), timeout=POLL_TIMEOUT_S
    ) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data:")
            if received == 3:
                break
    wait_for(
        lambda: _outcome(server, "slow", "cancelled") >= before + 1, "the HTTP cancellation to be counted"
    )
    # gRPC: cancel the stream after three tokens.
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc)
    client.start_stream(callback=lambda result, error: responses.put(result))
    arrays = engine_arrays(PROMPT, 1000, streaming=np.array([[True]]))
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), _triton_type(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client.async_stream_infer("slow", inputs)
    for _ in range(3):
        responses.get(timeout=POLL_TIMEOUT_S)
    client.stop_stream(cancel_requests=True)
    client.close()
    wait_for(
        lambda: _outcome(server, "slow", "cancelled") >= before + 2, "the gRPC cancellation to be counted"
    )
    wait_for(lambda: _kv_used(server, "slow") == 0, "the cancelled sequences' KV blocks to be freed")
    assert _outcome(server, "slow", "completed") == 0  # neither stream ran to its 1000 tokens


def test_eight_concurrent_streams_all_complete_and_interleave(servers):
    order: list[int] = []
    lock = threading.Lock()
    results: dict[int, list[int]] = {}

    def run(index: int) -> None:
        url = f"http://{servers['a'].http}/v2/models/slow/generate_stream"
        body = generate_body([50 + index, 51, 52], 60, streaming=[True])
        tokens = []
        with httpx.stream("POST", url, json=body, timeout=POLL_TIMEOUT_S) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    tokens.append(line)
                    with lock:
                        order.append(index)
        results[index] = tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(8)) and all(len(t) == 60 for t in results.values())
    # Interleaving: every stream received its first token before any stream received its last one.
    first = {i: order.index(i) for i in range(8)}
    last = {i: len(order) - 1 - order[::-1].index(i) for i in range(8)}
    assert max(first.values()) < min(last.values())


def test_a_repeated_prefix_reuses_kv_blocks(servers):
    server = servers["a"]
    prompt = list(range(60, 100))  # 40 tokens = 5 blocks of 8; 4 lie inside prompt[:-1]
    before = metric_value(
        server.metrics_text(), "nv_trt_llm_kv_cache_block_metrics", model="eng", kv_cache_block_type="reused"
    )
    first = generate(server, "eng", generate_body(prompt, 4, return_perf_metrics=[True]))
    second = generate(server, "eng", generate_body(prompt, 4, return_perf_metrics=[True]))
    assert first["kv_cache_reused_blocks"] == 0
    assert second["kv_cache_reused_blocks"] == 4
    assert second["kv_cache_alloc_total_blocks"] == second["kv_cache_alloc_new_blocks"] + 4
    wait_for(
        lambda: (
            metric_value(
                server.metrics_text(),
                "nv_trt_llm_kv_cache_block_metrics",
                model="eng",
                kv_cache_block_type="reused",
            )
            >= (before or 0) + 4
        ),
        "the reused-blocks gauge to move",
    )


def test_requests_the_engine_cannot_serve_get_clear_errors(servers):
    with pytest.raises(GenerateError, match=r"more than max_input_len \(256\)"):
        generate(servers["a"], "eng", generate_body([7] * 300, 4))
    with pytest.raises(GenerateError, match="needs 5 KV blocks .* the whole cache holds 4"):
        generate(servers["a"], "tight", generate_body([7] * 20, 20))
    wait_for(lambda: _outcome(servers["a"], "tight", "failed") >= 1, "the failure to be counted")


# ------------------------------------------------------------------------------------------ metrics

FAMILIES = {
    "nv_trt_llm_request_metrics": ("request_type", ["active", "max", "scheduled", "context", "waiting"]),
    "nv_trt_llm_kv_cache_block_metrics": (
        "kv_cache_block_type",
        ["max", "free", "used", "tokens_per", "reused", "fraction"],
    ),
    "nv_trt_llm_inflight_batcher_metrics": (
        "inflight_batcher_specific_metric",
        ["total_context_tokens", "generation_requests", "micro_batch_id", "paused_requests"],
    ),
    "nv_trt_llm_general_metrics": ("general_type", ["timestamp", "iteration_counter"]),
    "nv_trt_llm_runtime_memory_metrics": ("memory_type", ["cpu", "gpu", "pinned"]),
    "tritonstack_reference_engine_requests": ("outcome", ["completed", "cancelled", "failed"]),
}


def test_metrics_have_the_trtllm_backend_names_and_labels(servers):
    server = servers["a"]
    generate(server, "eng", generate_body(PROMPT, 60))

    def counted() -> str | None:
        text = server.metrics_text()
        return text if (metric_value(text, "nv_llm_output_token_len_count", model="eng") or 0) > 0 else None

    text = wait_for(counted, "token-length counters to appear")
    for family, (label, values) in FAMILIES.items():
        for value in values:
            assert metric_value(text, family, model="eng", version="1", **{label: value}) is not None, (
                family,
                value,
            )
    assert metric_value(text, "nv_trt_llm_request_metrics", model="eng", request_type="max") == 16
    assert (
        metric_value(text, "nv_trt_llm_kv_cache_block_metrics", model="eng", kv_cache_block_type="tokens_per")
        == 8
    )
    assert metric_value(text, "nv_trt_llm_runtime_memory_metrics", model="eng", memory_type="cpu") > 0
    for name, kind in (
        ("nv_llm_output_token_len", "total_output_tokens"),
        ("nv_llm_input_token_len", "total_input_tokens"),
    ):
        labels = {"model": "eng", "version": "1", "response_metric_type": kind}
        buckets = [
            metric_value(text, f"{name}_bucket", le=le, **labels)
            for le in ("10", "50", "100", "500", "1000", "+Inf")
        ]
        assert all(b is not None for b in buckets) and buckets == sorted(buckets)  # cumulative
        assert buckets[-1] == metric_value(text, f"{name}_count", **labels)
        assert metric_value(text, f"{name}_sum", **labels) > 0
    # The exposition carries the sample names a histogram would have.
    assert "\nnv_llm_output_token_len_bucket{" in text and 'le="+Inf"' in text
