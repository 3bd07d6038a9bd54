"""The reference engine is as strict as the real TensorRT-LLM backend, without Triton: it refuses the
config.pbtxt parameters the backend refuses (from backend_contract.json, with the backend's messages),
answers in the backend's output order and presence, and ends a request stopped by ``stop=true``
normally. Upstream sources are cited in the engine's files (reference_backend.py,
reference_contract.py, reference_scheduler.py)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.support.reference_engine import (
    DEFAULT_PARAMETERS,
    ENGINE_DIR,
    FLAGGED_OUTPUTS,
    RESPONSE_ORDER,
    backend_contract,
    write_tokenizer,
)

sys.path.insert(0, str(ENGINE_DIR))

from reference_backend import (  # noqa: E402
    check_parameters,
    parse_backend_contract,
    read_backend_contract,
)
from reference_contract import (  # noqa: E402
    check_requested_outputs,
    parse_request,
    read_engine_config,
    response_arrays,
)
from reference_kv import KvBlockPool  # noqa: E402
from reference_lm import ReferenceEngineError, ReferenceLM, SamplingParams, read_vocabulary  # noqa: E402
from reference_scheduler import BatcherSettings, EngineRequest, InflightBatcher  # noqa: E402

PROMPT = [40, 41, 42, 43, 44]
CONTRACT = parse_backend_contract(backend_contract())
PERF = set(FLAGGED_OUTPUTS["return_perf_metrics"])


def _model_config(**parameters: str) -> dict:
    values = {**DEFAULT_PARAMETERS, "tokenizer_dir": "/tok", **parameters}
    return {
        "name": "m_tensorrt_llm",
        "max_batch_size": 8,
        "parameters": {k: {"string_value": v} for k, v in values.items() if v is not None},
    }


# ------------------------------------------------------------------------------------------ load


def test_a_repository_without_the_contract_file_is_refused(tmp_path):
    with pytest.raises(
        ReferenceEngineError, match="backend_contract.json is missing: .*not rendered by tritonstack"
    ):
        read_backend_contract(str(tmp_path / "backend_contract.json"))
    (tmp_path / "backend_contract.json").write_text(json.dumps(backend_contract("0.19")))
    assert read_backend_contract(str(tmp_path / "backend_contract.json")).era == "0.19"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"required_parameters": []}, "era must be"),
        ({"era": "1.x", "parameters": {"k": {"format": "yaml"}}}, r"parameters.k.format is 'yaml'"),
        ({"era": "1.x", "parameters": {"k": {"format": "enum"}}}, "parameters.k is an enum without values"),
        ({"era": "1.x", "required_parameters": [{"source": "x"}]}, r"required_parameters\[0\] needs a name"),
        ({"era": "1.x", "response_order": "output_ids"}, "response_order must be a list"),
        ({"era": "1.x"}, "flagged_outputs is missing"),
        ({"era": "1.x", "flagged_outputs": {"return_perf_metrics": "arrival_time_ns"}}, "flagged_outputs must map"),
    ],
)
def test_a_malformed_contract_names_the_key(raw, message):
    with pytest.raises(ReferenceEngineError, match=message):
        parse_backend_contract(raw)


def test_the_rendered_parameters_pass():
    check_parameters(CONTRACT, _model_config())


@pytest.mark.parametrize("key", ["xgrammar_tokenizer_info_path", "guided_decoding_backend", "tokenizer_dir"])
def test_a_missing_required_parameter_fails_with_the_backend_message(key):
    with pytest.raises(ReferenceEngineError) as error:
        check_parameters(CONTRACT, _model_config(**{key: None}))
    assert str(error.value).startswith(
        f"unexpected error when creating modelInstanceState: Cannot find parameter with name: {key}"
    )
    assert "tensorrtllm_backend/blob/v0.19.0" in str(error.value)  # where the backend reads it


@pytest.mark.parametrize("spelling", ["", "${xgrammar_tokenizer_info_path}"])
def test_unset_spellings_count_as_present(spelling):
    check_parameters(
        CONTRACT,
        _model_config(
            xgrammar_tokenizer_info_path=spelling, guided_decoding_backend=spelling, tokenizer_dir=spelling
        ),
    )


def test_a_required_typed_parameter_must_parse_even_when_unset():
    with pytest.raises(ReferenceEngineError, match="creating modelInstanceState: .*gpt_model_type"):
        check_parameters(CONTRACT, _model_config(gpt_model_type="${gpt_model_type}"))
    with pytest.raises(ReferenceEngineError, match="'static' is not one of V1, v1, inflight_batching"):
        check_parameters(CONTRACT, _model_config(gpt_model_type="static"))


def test_an_unset_spelling_is_refused_where_the_backend_would_use_it_as_given():
    contract = parse_backend_contract(
        {
            "era": "1.x",
            "parameters": {"lora_prefetch_dir": {"format": "path", "unset_allowed": False}},
            "flagged_outputs": {},
        }
    )
    check_parameters(contract, _model_config())  # absent: fine
    check_parameters(contract, _model_config(lora_prefetch_dir="/loras"))
    with pytest.raises(
        ReferenceEngineError, match="lora_prefetch_dir='\\$\\{lora_prefetch_dir\\}': .*omit the key"
    ):
        check_parameters(contract, _model_config(lora_prefetch_dir="${lora_prefetch_dir}"))


def test_the_rendered_catalog_contract_is_read_as_written():
    from generator.contract import reference_engine_contract  # noqa: PLC0415

    for era in ("0.19", "1.x"):
        contract = parse_backend_contract(json.loads(reference_engine_contract(era)))
        assert contract.era == era and contract.response_order[:2] == ("output_ids", "sequence_length")
        assert {"tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"} <= {
            name for name, _ in contract.required
        }
        check_parameters(contract, _model_config())  # what the engine tests' configs carry


@pytest.mark.parametrize(
    "spelling", ["True", "true", "TRUE", "1", "False", "false", "FALSE", "0", "${x}", ""]
)
def test_the_bool_spellings_of_the_backend_parse(spelling):
    check_parameters(CONTRACT, _model_config(enable_kv_cache_reuse=spelling))


@pytest.mark.parametrize("spelling", ["yes", "tRuE", " true", "on", "2"])
def test_other_bool_spellings_are_refused_naming_the_key(spelling):
    with pytest.raises(ReferenceEngineError) as error:
        check_parameters(CONTRACT, _model_config(exclude_input_in_output=spelling))
    message = str(error.value)
    assert message.startswith(
        f"parameter exclude_input_in_output={spelling!r}: Cannot convert {spelling} to a boolean."
    )
    assert "would log a warning and use its default" in message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_beam_width", "1.5", "max_beam_width='1.5': '1.5' is not an integer"),
        ("stats_check_period_ms", "fast", "stats_check_period_ms='fast'"),
        ("kv_cache_free_gpu_mem_fraction", "90%", "'90%' is not a number"),
        ("gpu_device_ids", "0,one", "is not a comma-separated list of integers"),
        ("batch_scheduler_policy", "fifo", "'fifo' is not one of max_utilization, guaranteed_no_evict"),
    ],
)
def test_values_the_backend_cannot_parse_are_refused(key, value, message):
    with pytest.raises(ReferenceEngineError, match=message):
        check_parameters(CONTRACT, _model_config(**{key: value}))


def test_values_the_backend_parses_pass():
    check_parameters(
        CONTRACT,
        _model_config(
            max_beam_width="-1",
            kv_cache_free_gpu_mem_fraction="0.85",
            gpu_device_ids="0,1;2,3",
            batch_scheduler_policy="max_utilization",
            max_tokens_in_paged_kv_cache="${max_tokens_in_paged_kv_cache}",
        ),
    )


def test_engine_config_takes_the_backend_bool_spellings_only():
    assert (
        read_engine_config(_model_config(enable_kv_cache_reuse="FALSE"), "/m").enable_kv_cache_reuse is False
    )
    with pytest.raises(ReferenceEngineError, match="enable_kv_cache_reuse='yes' is not a boolean"):
        read_engine_config(_model_config(enable_kv_cache_reuse="yes"), "/m")


# ------------------------------------------------------------------------------------------ responses


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> ReferenceLM:
    return ReferenceLM(read_vocabulary(str(write_tokenizer(tmp_path_factory.mktemp("tok")))), seed=7)


@pytest.fixture(scope="module")
def config(lm):
    return read_engine_config(_model_config(tokenizer_dir="/tok"), "/m")


class Sink:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finals = 0
        self.was_cancelled = False
        self.failure: str | None = None

    def deliver(self, sequence, tokens, final):
        self.tokens += tokens
        self.finals += int(final)
        return True

    def is_cancelled(self):
        return False

    def cancelled(self, sequence):
        self.was_cancelled = True

    def failed(self, message):
        self.failure = message


def _batcher(lm, max_active=16) -> InflightBatcher:
    return InflightBatcher(
        lm, KvBlockPool(256, 8, True), BatcherSettings(max_active=max_active, cancellation_check_period_s=0.0)
    )


def _run(lm, config, request_type="context_and_generation", **flags):
    inputs = {
        "input_ids": np.array([PROMPT], np.int32),
        "input_lengths": np.array([len(PROMPT)], np.int32),
        "request_output_len": np.array([3], np.int32),
        **{k: np.array([v]) for k, v in flags.items()},
    }
    parsed = parse_request(inputs, {"request_type": request_type}, config, lm, request_id="r")
    batcher = _batcher(lm)
    sequence = batcher.submit(parsed.engine_request, Sink())
    while batcher.step():
        pass
    return sequence, parsed


def _names(sequence, parsed, requested=frozenset(), blob=None, order=tuple(RESPONSE_ORDER)) -> list[str]:
    return list(response_arrays(sequence, parsed, [], requested, blob, True, order, FLAGGED_OUTPUTS))


def test_a_plain_request_gets_output_ids_then_sequence_length_only(lm, config):
    sequence, parsed = _run(lm, config)
    assert _names(sequence, parsed) == ["output_ids", "sequence_length"]


def test_perf_metrics_only_when_asked_and_in_the_backend_order(lm, config):
    sequence, parsed = _run(lm, config, return_perf_metrics=True)
    names = _names(sequence, parsed)
    assert names[:2] == ["output_ids", "sequence_length"]
    assert names[2:] == [n for n in RESPONSE_ORDER if n in PERF]
    arrays = response_arrays(sequence, parsed, [], frozenset(), None, True, tuple(RESPONSE_ORDER), FLAGGED_OUTPUTS)
    assert arrays["arrival_time_ns"].dtype == np.int64 and arrays["kv_cache_alloc_total_blocks"].shape == (
        1,
        1,
    )


def test_log_probs_and_token_counts_only_when_asked(lm, config):
    sequence, parsed = _run(
        lm, config, return_log_probs=True, return_num_input_tokens=True, return_num_output_tokens=True
    )
    assert _names(sequence, parsed) == [
        "output_ids",
        "sequence_length",
        "output_log_probs",
        "cum_log_probs",
        "num_input_tokens",
        "num_output_tokens",
    ]


def test_context_only_requests_carry_their_blob_and_batch_index_never_appears(lm, config):
    sequence, parsed = _run(lm, config, request_type="context_only", return_num_input_tokens=True)
    names = _names(sequence, parsed, blob=b"blob")
    assert names == ["output_ids", "sequence_length", "context_phase_params", "num_input_tokens"]
    assert "batch_index" not in names and "sequence_index" not in names  # batch 1, one sequence


def test_the_order_comes_from_the_contract(lm, config):
    sequence, parsed = _run(lm, config, return_num_input_tokens=True)
    order = ("num_input_tokens", "sequence_length", "output_ids")
    assert _names(sequence, parsed, order=order) == ["num_input_tokens", "sequence_length", "output_ids"]


def test_only_requested_outputs_are_sent(lm, config):
    sequence, parsed = _run(lm, config, return_perf_metrics=True)
    requested = frozenset({"output_ids", "sequence_length", "first_token_time_ns", "batch_index"})
    assert _names(sequence, parsed, requested) == ["output_ids", "sequence_length", "first_token_time_ns"]


@pytest.mark.parametrize("missing", ["output_ids", "sequence_length"])
def test_a_request_must_ask_for_output_ids_and_sequence_length(missing):
    requested = frozenset({"output_ids", "sequence_length", "num_input_tokens"}) - {missing}
    with pytest.raises(
        ReferenceEngineError,
        match=f"Error encountered while populating response: {missing} tensor must be present in list of output tensors",
    ):
        check_requested_outputs(requested)
    check_requested_outputs(frozenset())  # nothing named: Triton asks for every output


# ------------------------------------------------------------------------------------------ stop


def test_a_stopped_request_ends_normally_with_the_tokens_so_far(lm):
    batcher = _batcher(lm)
    sink = Sink()
    batcher.submit(EngineRequest("r1", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=500)), sink)
    for _ in range(4):
        batcher.step()
    batcher.stop_request("r1")
    batcher.stop_request("unknown")  # no such request: nothing happens
    while batcher.step():
        pass
    assert sink.finals == 1 and not sink.was_cancelled and sink.failure is None
    assert len(sink.tokens) == 4  # the final response brought no new token
    assert batcher.pool.stats().used_blocks == 0
    assert batcher.drain_outcomes().cancelled == 1


def test_a_stopped_request_still_waiting_ends_normally_too(lm):
    batcher = _batcher(lm, max_active=1)
    running, queued = Sink(), Sink()
    batcher.submit(EngineRequest("a", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=5)), running)
    batcher.submit(EngineRequest("b", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=5)), queued)
    batcher.step()
    batcher.stop_request("b")
    while batcher.step():
        pass
    assert (queued.finals, queued.tokens, queued.was_cancelled) == (1, [], False)
    assert len(running.tokens) == 5
