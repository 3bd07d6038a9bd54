"""Disaggregation that a GPU node can run: which prefill/decode layouts the spec accepts, and what is
rendered for each (environment, mpirun ranks, model.yaml's cache transceiver, the LLM-API hand-over
through the router's two-phase flow)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator import yamlio
from generator.errors import SpecError
from generator.pipeline import build
from generator.render.disaggregation import in_server_layout, orchestrator_world_size, pool_environment
from generator.render.model_repo.llmapi import DISAGGREGATED_MODEL_SOURCE
from generator.render.routes import ROUTES_PATH
from generator.router.config import parse_routes
from generator.router.disagg import DisaggregatedFlow
from generator.router.metrics import RouterMetrics
from generator.router.policies import Hints
from generator.router.protocols import upstream_protocol
from generator.router.upstream import GenerateCall, Response
from generator.runtime import launcher as launcher_module
from generator.runtime.launcher import Launcher, launch_notes
from generator.runtime.tritonserver import find_tritonserver
from generator.spec import parse_spec
from tests.support.paths import EXAMPLES


def _spec(triton: str, models: str, pools: str) -> str:
    return f"apiVersion: tritonstack/v1\nname: pd\ntarget: {{triton: '{triton}', gpu: h100}}\nmodels:\n{models}pools:\n{pools}"


ENGINE = "  - {name: big, engine_dir: /srv/engines/big, tokenizer_dir: /srv/tok}\n"
LLMAPI = "  - {name: big, llm_api: true, checkpoint_dir: /srv/hf/big, tokenizer_dir: /srv/tok}\n"
PAIR = "  - {name: pre, role: prefill, models: [big]}\n  - {name: dec, role: decode, models: [big]}\n"


def _build(tmp_path: Path, text: str) -> dict[str, bytes]:
    spec = tmp_path / "stack.yaml"
    spec.write_text(text)
    return build(spec, tmp_path / "out").files


# ------------------------------------------------------------------------------- spec refusals


@pytest.mark.parametrize("triton", ["25.06", "25.12", "26.07"])
def test_engine_prefill_decode_pools_are_refused_on_1x_with_why_and_what_to_do(triton: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(_spec(triton, ENGINE, PAIR))
    text = str(error.value)
    assert "stack.yaml:" in text and "pools[0].models[0]" in text and "pools[1].models[0]" in text
    assert "hard-codes the MPI cache transceiver" in text
    assert "a prefill and a decode tritonserver cannot move KV between them" in text
    assert "in_server_disaggregation: true" in text and "llm_api: true" in text


def test_engine_pairs_pass_on_2505_and_reference_engine_pairs_everywhere() -> None:
    parse_spec(_spec("25.05", ENGINE, PAIR))
    stack = parse_spec((EXAMPLES / "quickstart.yaml").read_text())  # tiny-pd: reference engine pair on 25.12
    assert {p.role for p in stack.pools} == {"aggregated", "prefill", "decode"}


def test_llmapi_pairs_need_a_transceiver_backend_and_have_no_in_server_split() -> None:
    with pytest.raises(SpecError, match=r"has no backend setting to reach another server; use Triton 25.06"):
        parse_spec(_spec("25.05", LLMAPI, PAIR))
    with pytest.raises(SpecError, match=r"no in-server context/generation split"):
        parse_spec(_spec("26.07", LLMAPI, "  - {name: one, in_server_disaggregation: true, models: [big]}\n"))


# ---------------------------------------------------------------- 25.05: UCX between the servers


def test_2505_engine_pair_gets_ucx_in_compose_kubernetes_and_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _build(tmp_path, _spec("25.05", ENGINE, PAIR))
    compose = yaml.safe_load(files["deploy/compose/compose.yaml"])
    for service in ("pre-0", "dec-0"):
        assert compose["services"][service]["environment"] == {"TRTLLM_USE_UCX_KVCACHE": "1"}
    for pool in ("pre", "dec"):
        pod = next(d for d in yamlio.safe_load_all(files[f"deploy/k8s/base/pool-{pool}.yaml"]) if d["kind"] == "Deployment")
        env = pod["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "TRTLLM_USE_UCX_KVCACHE", "value": "1"} in env
    stack = parse_spec(_spec("25.05", ENGINE, PAIR))
    spawned: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(launcher_module, "_spawn", lambda member, command, env: spawned.append((command, env)))
    for pool in ("pre", "dec"):
        (tmp_path / "run" / "model_repos" / pool).mkdir(parents=True)
    Launcher(stack, tmp_path / "run", find_tritonserver(), tmp_path / "logs").start()
    assert [env.get("TRTLLM_USE_UCX_KVCACHE") for _, env in spawned] == ["1", "1"]
    # Aggregated engine pools and the reference engine get nothing.
    aggregated = parse_spec(_spec("25.05", ENGINE, "  - {name: one, models: [big]}\n"))
    assert pool_environment(aggregated, aggregated.pools[0]) == {}
    quickstart = parse_spec((EXAMPLES / "quickstart.yaml").read_text())
    assert all(pool_environment(quickstart, p) == {} for p in quickstart.pools)


# -------------------------------------------------------------------- in-server disaggregation

TWO_SPLIT = (
    "  - {name: big, engine_dir: /srv/engines/big, tokenizer_dir: /srv/tok, tensor_parallel: 2}\n"
    "  - {name: small, engine_dir: /srv/engines/small, tokenizer_dir: /srv/tok}\n"
)
SPLIT_POOL = "  - {name: one, in_server_disaggregation: true, models: [big, small]}\n"


def test_in_server_ranks_are_numbered_across_the_pools_models() -> None:
    stack = parse_spec(_spec("26.07", TWO_SPLIT, SPLIT_POOL))
    layout = in_server_layout(stack, stack.pools[0])
    assert (layout["big"].context_ids, layout["big"].generation_ids) == ((1, 2), (3, 4))
    assert (layout["small"].context_ids, layout["small"].generation_ids) == ((5,), (6,))
    assert (layout["big"].context_gpus, layout["big"].generation_gpus) == ((0, 1), (2, 3))
    assert orchestrator_world_size(stack, stack.pools[0]) == 7


@pytest.mark.parametrize(("triton", "mpi_kv"), [("26.07", None), ("25.05", "1")])
def test_in_server_manifests_run_upstreams_orchestrator_launch(tmp_path: Path, triton: str, mpi_kv: str | None) -> None:
    files = _build(tmp_path, _spec(triton, TWO_SPLIT, SPLIT_POOL))
    config = files["model_repos/one/small_generation/config.pbtxt"].decode()
    assert 'key: "participant_ids"' in config and '"6"' in config
    pod = next(d for d in yamlio.safe_load_all(files["deploy/k8s/base/pool-one.yaml"]) if d["kind"] == "Deployment")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRTLLM_ORCHESTRATOR"] == "1" and env["TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES"] == "0"
    assert env.get("TRTLLM_USE_MPI_KVCACHE") == mpi_kv
    command = container["command"]
    assert command[:2] == ["mpirun", "--allow-run-as-root"] and command.count("tritonserver") == 7
    ranks = " ".join(command).split(" : ")
    assert "--http-port=8000" in ranks[0] and "--load-model=big_ensemble" in ranks[0]
    for rank in ranks[1:]:
        assert "--allow-http=false" in rank and "--load-model=big_ensemble" not in rank
        assert all(f"--load-model={m}" in rank for m in ("big_context", "big_generation", "small_context", "small_generation"))
    # Spawning is disabled, so upstream's launcher adds no memory-pool arguments (it does so only
    # for --multi-model with spawning).
    assert "--pinned-memory-pool-byte-size=0" not in command
    compose = yaml.safe_load(files["deploy/compose/compose.yaml"])
    assert compose["services"]["one-0"]["command"][0] == "mpirun"
    assert compose["services"]["one-0"]["environment"]["TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES"] == "0"


def test_up_runs_engine_in_server_pools_under_mpirun_and_labels_the_reference_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(launcher_module, "_spawn", lambda member, command, env: spawned.append((command, env)))
    (tmp_path / "model_repos" / "one").mkdir(parents=True)
    engines = parse_spec(_spec("26.07", TWO_SPLIT, SPLIT_POOL))
    Launcher(engines, tmp_path, find_tritonserver(), tmp_path / "logs").start()
    command, env = spawned[0]
    assert command[0] == "mpirun" and command.count(":") == 6
    assert env["TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES"] == "0"
    assert launch_notes(engines) == []
    reference = parse_spec(
        _spec("26.07", "  - {name: tiny, reference_engine: {}, tokenizer_dir: /t}\n",
              "  - {name: one, in_server_disaggregation: true, models: [tiny]}\n")
    )
    spawned.clear()
    Launcher(reference, tmp_path, find_tritonserver(), tmp_path / "logs").start()
    assert spawned[0][0][0] != "mpirun" and "TRTLLM_ORCHESTRATOR" not in spawned[0][1]
    (note,) = launch_notes(reference)
    assert "one tritonserver process" in note and "reference engine" in note and "mpirun" in note


# -------------------------------------------------------------------- LLM-API prefill/decode


def test_llmapi_pair_renders_the_transceiver_and_the_hand_over(tmp_path: Path) -> None:
    files = _build(tmp_path, _spec("26.07", LLMAPI, PAIR))
    prefill = yaml.safe_load(files["model_repos/pre/big_llmapi/1/model.yaml"])
    decode = yaml.safe_load(files["model_repos/dec/big_llmapi/1/model.yaml"])
    assert prefill["cache_transceiver_config"] == {"backend": "UCX", "max_tokens_in_buffer": 2048}
    assert decode["cache_transceiver_config"] == prefill["cache_transceiver_config"]
    assert prefill["disable_overlap_scheduler"] is True and "disable_overlap_scheduler" not in decode
    assert prefill["triton_config"]["decoupled"] is False and decode["triton_config"]["decoupled"] is True
    pre_config = files["model_repos/pre/big_llmapi/config.pbtxt"].decode()
    dec_config = files["model_repos/dec/big_llmapi/config.pbtxt"].decode()
    assert pre_config.split("output [")[1].count('"disaggregated_params"') == 1
    assert dec_config.split("output [")[0].count('"disaggregated_params"') == 1
    for pool in ("pre", "dec"):
        assert files[f"model_repos/{pool}/big_llmapi/1/model.py"] == DISAGGREGATED_MODEL_SOURCE.read_bytes()
    routes = parse_routes(files[ROUTES_PATH].decode())
    serving = routes.models["big"].serving
    assert (serving.kind, serving.protocol) == ("disaggregated", "llmapi")  # type: ignore[union-attr]
    assert serving.prefill.triton_model == serving.decode.triton_model == "big_llmapi"  # type: ignore[union-attr]
    # No environment: the transceiver is configured in model.yaml.
    stack = parse_spec(_spec("26.07", LLMAPI, PAIR))
    assert all(pool_environment(stack, p) == {} for p in stack.pools)


@pytest.mark.parametrize(("triton", "backend"), [("25.08", "nixl"), ("26.07", "NIXL")])
def test_transceiver_backend_comes_from_the_spec_in_the_releases_spelling(tmp_path: Path, triton: str, backend: str) -> None:
    models = LLMAPI.replace("tokenizer_dir: /srv/tok}", "tokenizer_dir: /srv/tok, cache_transceiver: {backend: NIXL}}")
    files = _build(tmp_path, _spec(triton, models, PAIR))
    assert yaml.safe_load(files["model_repos/dec/big_llmapi/1/model.yaml"])["cache_transceiver_config"]["backend"] == backend


def test_blackwell_example_serves_its_70b_pair_through_the_llmapi_path(tmp_path: Path) -> None:
    stack = parse_spec((EXAMPLES / "blackwell-b200.yaml").read_text())
    big = stack.model("llama-3.3-70b-nvfp4")
    assert big.llm_api and big.engine_dir is None and big.cache_transceiver.backend == "UCX"
    # --reference-engine still runs the same topology on CPU (the reference engine's pair).
    built = build(EXAMPLES / "blackwell-b200.yaml", tmp_path / "out", reference_engine=True)
    assert "model_repos/prefill-70b/llama-3.3-70b-nvfp4_context/config.pbtxt" in built.files


def _load_disaggregated_model() -> types.ModuleType:
    """Import the template with a stand-in triton_python_backend_utils: only its helpers run here."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("llmapi_disaggregated_model", DISAGGREGATED_MODEL_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_disaggregated_params_survive_the_trip_between_the_pools() -> None:
    """The shape of tensorrt_llm.disaggregated_params.DisaggregatedParams (a dataclass with bytes)."""
    module = _load_disaggregated_model()

    @dataclass
    class Params:  # TEST STAND-IN of DisaggregatedParams' field kinds
        request_type: str | None = None
        first_gen_tokens: list[int] | None = None
        ctx_request_id: int | None = None
        opaque_state: bytes | None = None
        draft_tokens: list[int] | None = None
        first_gen_logits: Any = None

    sent = Params("context_only", [42], 7, b"\x00\xffstate", None, object())
    raw = module.encode_params(sent)
    assert json.loads(raw)["opaque_state"] == {"base64": "AP9zdGF0ZQ=="}
    got = module.decode_params(raw, Params)
    assert (got.request_type, got.first_gen_tokens, got.ctx_request_id, got.opaque_state) == (
        "generation_only", [42], 7, b"\x00\xffstate")
    assert got.first_gen_logits is None
    with pytest.raises(ValueError, match="not the JSON a context_only request returned"):
        module.decode_params(b"\xff", Params)


# ------------------------------------------------------------- router two-phase flow (LLM-API)


class _StandInDispatcher:
    """TEST STAND-IN of the dispatcher: answers as tritonstack's LLM-API model does (cumulative text,
    finish_reason, disaggregated_params from the context phase) and records every call."""

    def __init__(self, first: str, rest: list[str], context_reason: str = "length") -> None:
        self.first, self.rest, self.context_reason = first, rest, context_reason
        self.calls: list[GenerateCall] = []

    async def stream(self, target: Any, call: GenerateCall, hints: Hints, retries: int | None = None) -> AsyncIterator[Response]:
        self.calls.append(call)
        if call.parameters["request_type"] == "context_only":
            yield Response(text=self.first, finish_reason=self.context_reason, disaggregated_params=b'{"ctx_request_id": 7}')
            return
        assert call.inputs["disaggregated_params"] == b'{"ctx_request_id": 7}'
        text = self.first
        for piece in self.rest:
            text += piece
            yield Response(text=text)
        yield Response(text=text, finish_reason="length")


def _run(flow: DisaggregatedFlow, streaming: bool) -> list[Response]:
    async def collect() -> list[Response]:
        call = GenerateCall(model="", inputs={"text_input": "hi", "streaming": streaming}, request_id="r1")
        return [r async for r in flow.run("big", call, Hints(), streaming, lambda context: False)]

    return asyncio.run(collect())


def _flow(dispatcher: _StandInDispatcher) -> DisaggregatedFlow:
    prefill = types.SimpleNamespace(pool=types.SimpleNamespace(name="pre", ready_count=1))
    decode = types.SimpleNamespace(pool=types.SimpleNamespace(name="dec", ready_count=1))
    return DisaggregatedFlow(
        dispatcher, RouterMetrics(lambda: []), prefill, "big_llmapi", decode, "big_llmapi", 5.0,  # type: ignore[arg-type]
        upstream_protocol("llmapi"),
    )


@pytest.mark.parametrize("streaming", [True, False])
def test_llmapi_flow_carries_the_context_phases_disaggregated_params(streaming: bool) -> None:
    dispatcher = _StandInDispatcher(" Hello", [" there", " friend"])
    responses = _run(_flow(dispatcher), streaming)
    context, generation = dispatcher.calls
    assert context.parameters == {"request_type": "context_only"} and context.inputs["streaming"] is False
    assert generation.parameters == {"request_type": "generation_only"}
    assert generation.inputs["streaming"] is streaming and context.request_id == "r1-ctx"
    pieces = [r.text for r in responses]
    assert "".join(pieces) == " Hello there friend"
    if streaming:  # the first token at once, then only what is new
        assert pieces[:3] == [" Hello", " there", " friend"]
    assert responses[-1].finish_reason == "length"


def test_llmapi_flow_answers_from_the_context_phase_when_it_ended_the_request() -> None:
    dispatcher = _StandInDispatcher(" Bye", [], context_reason="stop")
    responses = _run(_flow(dispatcher), True)
    assert len(dispatcher.calls) == 1 and [r.text for r in responses] == [" Bye"]
    assert responses[0].finish_reason == "stop"
