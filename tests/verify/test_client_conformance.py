"""Requests shaped like NVIDIA's TensorRT-LLM clients against the rendered quickstart on real
tritonservers (CPU build, reference engine): every check of generator/verify/conformance.py, on
every model kind of every pool (ensemble, BLS and engine of the aggregated pool and of the decode
pool, the by-hand pipeline of end_to_end_test.py, the prefill pool's context-only entry).

Each test expects what upstream's clients expect (generator/verify/conformance.py says which client
expects what); the check's detail is the assertion message.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from generator.naming import triton_names
from generator.verify import conformance
from generator.verify.conformance import ConformanceSettings, Replica
from generator.verify.report import CheckResult
from tests.support.stack import RunningStack

pytestmark = pytest.mark.triton

SETTINGS = ConformanceSettings()

CHAT = triton_names("tiny-chat", "aggregated")
DECODE = triton_names("tiny-pd", "decode")
PREFILL = triton_names("tiny-pd", "prefill")

ENTRY_CHECKS: dict[str, Callable[[Replica, str], CheckResult]] = {
    "grpc": lambda r, m: conformance.entry_grpc(r, m, SETTINGS, streaming=False),
    "grpc-stream": lambda r, m: conformance.entry_grpc(r, m, SETTINGS, streaming=True),
    "http-generate": lambda r, m: conformance.entry_generate(r, m, SETTINGS, streaming=False),
    "http-generate-stream": lambda r, m: conformance.entry_generate(r, m, SETTINGS, streaming=True),
    "log-probs": lambda r, m: conformance.entry_log_probs(r, m, SETTINGS),
    "perf-metrics": lambda r, m: conformance.entry_perf_metrics(r, m, SETTINGS),
    "stop-words": lambda r, m: conformance.entry_stop_words(r, m, SETTINGS),
    "cancel": lambda r, m: conformance.entry_cancel(r, m, SETTINGS),
}
ENGINE_CHECKS: dict[str, Callable[[Replica, tuple[str, str]], CheckResult]] = {
    "engine-grpc": lambda r, n: conformance.engine_grpc(r, n, SETTINGS, streaming=False),
    "engine-grpc-stream": lambda r, n: conformance.engine_grpc(r, n, SETTINGS, streaming=True),
    "engine-log-probs": lambda r, n: conformance.engine_log_probs(r, n, SETTINGS),
    "engine-perf-metrics": lambda r, n: conformance.engine_perf_metrics(r, n, SETTINGS),
    "engine-stop-request": lambda r, n: conformance.engine_stop_request(r, n, SETTINGS),
    "engine-cancel": lambda r, n: conformance.engine_cancel(r, n, SETTINGS),
}
ENTRIES = [
    ("chat", CHAT.ensemble),
    ("chat", CHAT.bls),
    ("pd-decode", DECODE.ensemble),
    ("pd-decode", DECODE.bls),
]
ENGINES = [("chat", CHAT), ("pd-decode", DECODE)]


def _replica(stack: RunningStack, pool: str) -> Replica:
    server = stack.replicas(pool)[0]
    return Replica(server.http_url, server.grpc_address)


def _expect(result: CheckResult) -> None:
    assert result.passed, f"{result.check} {result.target}: {result.detail}"


@pytest.mark.parametrize("check", list(ENTRY_CHECKS))
@pytest.mark.parametrize(("pool", "model"), ENTRIES, ids=[m for _, m in ENTRIES])
def test_text_models_answer_like_upstream(
    running_quickstart: RunningStack, pool: str, model: str, check: str
) -> None:
    result = ENTRY_CHECKS[check](_replica(running_quickstart, pool), model)
    assert (result.check, result.target) == (check, model)
    _expect(result)


@pytest.mark.parametrize("check", list(ENGINE_CHECKS))
@pytest.mark.parametrize(("pool", "names"), ENGINES, ids=[n.llm for _, n in ENGINES])
def test_engine_answers_like_upstream(running_quickstart: RunningStack, pool: str, names, check: str) -> None:
    result = ENGINE_CHECKS[check](_replica(running_quickstart, pool), (names.preprocessing, names.llm))
    assert (result.check, result.target) == (check, names.llm)
    _expect(result)


@pytest.mark.parametrize(("pool", "names"), ENGINES, ids=[n.ensemble for _, n in ENGINES])
def test_pipeline_by_hand_equals_the_ensemble(running_quickstart: RunningStack, pool: str, names) -> None:
    models = (names.preprocessing, names.llm, names.postprocessing)
    _expect(
        conformance.pipeline_by_hand(_replica(running_quickstart, pool), models, names.ensemble, SETTINGS)
    )


def test_prefill_entry_hands_over_the_context(running_quickstart: RunningStack) -> None:
    _expect(
        conformance.prefill_context_only(
            _replica(running_quickstart, "pd-prefill"), PREFILL.ensemble, SETTINGS
        )
    )


SYNC = triton_names("tiny-sync", "aggregated")


@pytest.mark.parametrize("entry", [SYNC.ensemble, SYNC.bls])
def test_a_model_served_without_streaming_answers_whole_and_refuses_to_stream(
    running_quickstart: RunningStack, entry: str
) -> None:
    """tiny-sync is not decoupled (upstream's decoupled_mode: false, what end_to_end_test.py and
    benchmark_core_model.py call with infer()): whole answers, and stream=true refused, not hung."""
    replica = _replica(running_quickstart, "chat")
    results = conformance.entry_checks(replica, entry, SETTINGS, streaming=False)
    assert {r.check for r in results} == {"grpc", "http-generate", "log-probs", "perf-metrics", "stop-words", "stream-refused"}
    for result in results:
        _expect(result)


def test_an_engine_served_without_streaming_refuses_streaming_with_the_backends_message(
    running_quickstart: RunningStack,
) -> None:
    replica = _replica(running_quickstart, "chat")
    results = conformance.engine_checks(replica, SYNC.preprocessing, SYNC.llm, SETTINGS, streaming=False)
    for result in results:
        _expect(result)
    refused = next(r for r in results if r.check == "stream-refused")
    assert "Streaming is only supported if model is deployed using decoupled mode" in refused.detail
