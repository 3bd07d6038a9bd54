"""In-server disaggregation: context and generation copies in one tritonserver, orchestrated by our
disaggregated_serving_bls, give the same text as the plain engine (real tritonserver, reference
engine)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from generator.runtime.launcher import Launcher
from tests.runtime.test_stack_triton import generate, generate_stream, request
from tests.support.paths import EXAMPLES
from tests.support.stack import start_stack

pytestmark = pytest.mark.triton

SPEC = f"""\
apiVersion: tritonstack/v1
name: in-server
models:
  - name: tiny
    reference_engine: {{seed: 3}}
    tokenizer_dir: {EXAMPLES / "tokenizers" / "tiny-chat"}
    max_batch_size: 4
pools:
  - name: split
    in_server_disaggregation: true
    models: [tiny]
  - name: plain
    models: [tiny]
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    work = tmp_path_factory.mktemp("in-server")
    spec = work / "stack.yaml"
    spec.write_text(SPEC)
    launcher = start_stack(spec, work / "build")
    try:
        yield launcher
    finally:
        launcher.stop()


def url(launcher: Launcher, pool: str) -> str:
    return next(r.http_url for r in launcher.replicas if r.pool == pool)


@pytest.mark.parametrize("model", ["tiny_ensemble", "tiny_bls"])
def test_split_phases_give_the_plain_engine_text(servers: Launcher, model: str) -> None:
    body = request(max_tokens=20, seed=9)
    plain = generate(url(servers, "plain"), model, body)["text_output"]
    split = generate(url(servers, "split"), model, body)["text_output"]
    assert split == plain and plain.strip()
    streamed = generate_stream(url(servers, "split"), model, {**body, "stream": True})
    assert len(streamed) > 1
    assert "".join(e["text_output"] for e in streamed) == plain


def test_one_token_is_answered_by_the_context_phase(servers: Launcher) -> None:
    body = request(max_tokens=1, seed=9)
    plain = generate(url(servers, "plain"), "tiny_ensemble", body)["text_output"]
    assert generate(url(servers, "split"), "tiny_ensemble", body)["text_output"] == plain


def test_the_split_is_real(servers: Launcher) -> None:
    """Both copies served the requests: each counted its own completions."""
    replica = next(r for r in servers.replicas if r.pool == "split")
    text = httpx.get(replica.metrics_url, timeout=10).text
    served = {
        line.split('model="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and not line.endswith(" 0")
    }
    assert {"tiny_context", "tiny_generation", "tiny_disaggregated_serving_bls"} <= served


def test_gpu_manifests_run_orchestrator_mode_on_both_copies_gpus(tmp_path) -> None:
    """On GPUs the pool runs upstream's orchestrator-mode launch with spawning disabled: one
    tritonserver per MPI rank under mpirun (orchestrator + 2 context + 2 generation ranks), and asks
    for both copies' GPUs."""
    from generator import yamlio
    from generator.pipeline import build

    spec = tmp_path / "stack.yaml"
    spec.write_text(
        "apiVersion: tritonstack/v1\nname: split\ntarget: {triton: '26.07', gpu: b200}\nmodels:\n"
        "  - {name: big, engine_dir: /srv/engines/big, tokenizer_dir: /srv/tok, tensor_parallel: 2}\n"
        "pools: [{name: one, in_server_disaggregation: true, models: [big]}]\n"
    )
    files = build(spec, tmp_path / "build").files
    config = files["model_repos/one/big_generation/config.pbtxt"].decode()
    assert '"2,3"' in config and '"3,4"' in config  # gpu_device_ids, participant_ids
    pod = next(d for d in yamlio.safe_load_all(files["deploy/k8s/base/pool-one.yaml"]) if d["kind"] == "Deployment")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "TRTLLM_ORCHESTRATOR", "value": "1"} in container["env"]
    assert {"name": "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES", "value": "0"} in container["env"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["command"][0] == "mpirun" and container["command"].count("tritonserver") == 5
    assert "--load-model=big_context" in container["command"]
