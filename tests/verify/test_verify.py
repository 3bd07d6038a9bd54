"""``tritonstack verify`` against the quickstart started for real (tritonservers, router, exporter on
free ports): it passes on the stack as rendered, and fails, naming the check, on a served config
without a rendered parameter, on a tensor whose type differs, and on a pool whose server was killed."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from generator.cli import main
from generator.pipeline import build
from generator.render.model_repo.reference import as_reference_engine
from generator.render.options import RenderOptions
from generator.runtime.launcher import Launcher, LaunchSettings, free_ports
from generator.runtime.local_stack import LocalStackSettings, service_url, start_local_stack
from generator.runtime.tritonserver import find_tritonserver
from generator.spec import load_spec
from generator.verify.checks import compare_config
from generator.write import write_output
from tests.support.paths import EXAMPLES

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SPEC = EXAMPLES / "quickstart.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, Path]]:
    """The quickstart as `tritonstack up` runs it: servers, router and exporter, once per module."""
    out = tmp_path_factory.mktemp("verify") / "build"
    built = build(SPEC, out, reference_engine=True)
    write_output(built.files, out)
    settings = LocalStackSettings(router_port=0, exporter_port=0, prometheus=False)
    launcher = start_local_stack(
        built.stack, out, out.with_name("run"), find_tritonserver(), RenderOptions(EXAMPLES, out), settings
    )
    try:
        yield launcher, out
    finally:
        launcher.stop()


def _address_args(launcher: Launcher) -> list[str]:
    args: list[str] = []
    for r in launcher.replicas:
        args += [
            "--triton",
            f"{r.pool}={r.http_url}",
            "--triton-grpc",
            f"{r.pool}={r.grpc_address}",
            "--triton-metrics",
            f"{r.pool}={r.metrics_url}",
        ]
    return args


def _verify(
    out: Path, launcher: Launcher, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, list[dict]]:
    argv = [
        "verify",
        str(SPEC),
        "--reference-engine",
        "--out",
        str(out),
        "--json",
        *_address_args(launcher),
        *extra,
    ]
    code = main(argv)
    report = json.loads(capsys.readouterr().out)
    return code, report["results"]


def _failures(results: list[dict]) -> list[str]:
    return [f"{r['check']} {r['target']}: {r['detail']}" for r in results if not r["passed"]]


def test_verify_passes_on_the_stack_as_rendered(
    stack: tuple[Launcher, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    launcher, out = stack
    router, exporter = service_url(launcher, "router"), service_url(launcher, "exporter")
    code, results = _verify(out, launcher, capsys, "--router", str(router), "--exporter", str(exporter))
    assert not _failures(results), "\n".join(_failures(results))
    assert code == 0
    checks = {r["check"] for r in results}
    assert {"reachable", "config", "grpc", "engine-stop-request", "router/chat", "metrics/triton"} <= checks
    assert {"metrics/exporter", "metrics/router", "pipeline-by-hand", "context-only"} <= checks


def test_from_up_reads_every_address_from_the_run_directory(
    stack: tuple[Launcher, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    launcher, out = stack
    run_dir = out.with_name("run")
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    assert endpoints["router"] == service_url(launcher, "router")
    assert [r["http"] for r in endpoints["pools"]["chat"]] == [r.http_url for r in launcher.replicas if r.pool == "chat"]
    code = main(["verify", str(SPEC), "--reference-engine", "--from-up", str(run_dir), "--json"])
    results = json.loads(capsys.readouterr().out)["results"]
    assert not _failures(results), "\n".join(_failures(results))
    assert code == 0
    assert {"router/chat", "metrics/exporter"} <= {r["check"] for r in results}


def test_from_up_without_endpoints_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", str(SPEC), "--reference-engine", "--from-up", str(tmp_path)])
    assert code == 1
    assert "no endpoints.json there" in capsys.readouterr().err


def test_table_and_help(stack: tuple[Launcher, Path], capsys: pytest.CaptureFixture[str]) -> None:
    launcher, out = stack
    chat = launcher.replicas[0]
    code = main(
        [
            "verify",
            str(SPEC),
            "--reference-engine",
            "--out",
            str(out),
            "--triton",
            f"chat={chat.http_url}",
            "--triton-grpc",
            f"chat={chat.grpc_address}",
            "--triton-metrics",
            f"chat={chat.metrics_url}",
        ]
    )
    table = capsys.readouterr().out
    assert code == 1  # the other pools have no address
    assert re.search(r"^address\s+pd-prefill\s+FAIL\s+no --triton address", table, re.MULTILINE)
    assert re.search(r"^config\s+chat/0 tiny-chat_ensemble\s+ok", table, re.MULTILINE)
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "--triton POOL=URL" in capsys.readouterr().out


def test_unknown_pool_and_bad_url_are_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert (
        main(
            ["verify", str(SPEC), "--reference-engine", "--out", str(tmp_path), "--triton", "nope=http://x:1"]
        )
        == 1
    )
    assert "the spec has no pool 'nope'" in capsys.readouterr().err
    assert (
        main(
            ["verify", str(SPEC), "--reference-engine", "--out", str(tmp_path), "--triton", "chat=localhost"]
        )
        == 1
    )
    assert "expected a URL such as http://host:port" in capsys.readouterr().err


def test_unreachable_addresses_fail_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port, router = free_ports(2)
    argv = [
        "verify",
        str(SPEC),
        "--reference-engine",
        "--out",
        str(tmp_path),
        "--timeout",
        "5",
        "--triton",
        f"chat=http://127.0.0.1:{port}",
        "--router",
        f"http://127.0.0.1:{router}",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert re.search(
        r"^reachable\s+chat/0\s+FAIL\s+cannot reach http://127\.0\.0\.1:\d+/v2/health/ready",
        captured.out,
        re.MULTILINE,
    )
    assert re.search(r"^router/models\s+\S+\s+FAIL\s+cannot reach the router", captured.out, re.MULTILINE)
    assert "Traceback" not in captured.err


def _drop_parameter(config: Path, key: str) -> None:
    text = config.read_text()
    block = re.compile(r'parameters: \{\n  key: "' + re.escape(key) + r'"\n  value: \{[^}]*\}\n\}\n')
    assert block.search(text), f"{key} is not in {config}"
    config.write_text(block.sub("", text))


def _retype_input(config: Path, name: str, old: str, new: str) -> None:
    text = config.read_text()
    pattern = re.compile(r'(name: "' + re.escape(name) + r'"\n\s+data_type: )' + old)
    assert pattern.search(text), f"{name} {old} is not in {config}"
    config.write_text(pattern.sub(r"\g<1>" + new, text, count=1))


def test_served_config_drift_fails_naming_the_key_and_the_tensor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The served copy on disk is edited before the servers start: one rendered parameter removed
    from the engine, one input of the BLS retyped (the python backend loads both)."""
    out = tmp_path / "build"
    write_output(build(SPEC, out, reference_engine=True).files, out)
    _drop_parameter(out / "model_repos/chat/tiny-chat_tensorrt_llm/config.pbtxt", "normalize_log_probs")
    _retype_input(
        out / "model_repos/chat/tiny-chat_bls/config.pbtxt",
        "embedding_bias_weights",
        "TYPE_FP32",
        "TYPE_FP16",
    )
    launcher = start_stack_from(out)
    try:
        code, results = _verify(out, launcher, capsys)
    finally:
        launcher.stop()
    assert code == 1
    failures = _failures(results)
    for replica in ("chat/0", "chat/1"):
        assert any(
            f.startswith(f"config {replica} tiny-chat_tensorrt_llm:")
            and "parameter normalize_log_probs missing" in f
            for f in failures
        ), failures
        assert any(
            f.startswith(f"config {replica} tiny-chat_bls:")
            and "input embedding_bias_weights type TYPE_FP16, rendered TYPE_FP32" in f
            for f in failures
        ), failures
    assert not [f for f in failures if f.startswith("config pd-")], failures


def start_stack_from(out: Path) -> Launcher:
    """Servers for an already written (and edited) render in ``out``."""
    stack, _notes = as_reference_engine(load_spec(SPEC), SPEC.parent)
    launcher = Launcher(stack, out, find_tritonserver(), out.with_name("logs"), LaunchSettings())
    try:
        launcher.start()
        launcher.wait_ready()
    except BaseException:
        launcher.stop()
        raise
    return launcher


def test_compare_config_names_dims_and_max_batch_size() -> None:
    rendered = model_config_pb2.ModelConfig(name="m", max_batch_size=8)
    rendered.input.add(name="x", data_type=model_config_pb2.TYPE_INT32, dims=[-1])
    rendered.parameters["k"].string_value = "1"
    served = model_config_pb2.ModelConfig(name="m", max_batch_size=4)
    served.input.add(name="x", data_type=model_config_pb2.TYPE_INT32, dims=[-1, -1], optional=True)
    served.parameters["k"].string_value = "2"
    assert compare_config(rendered, served) == [
        "max_batch_size 4, rendered 8",
        "input x dims [-1, -1], rendered [-1]",
        "input x optional True, rendered False",
        "parameter k is '2', rendered '1'",
    ]


def test_a_killed_pool_fails_reachable(
    stack: tuple[Launcher, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Last in this module: it kills a server of the shared stack."""
    launcher, out = stack
    victim = next(r for r in launcher.replicas if r.pool == "pd-decode")
    assert victim.process is not None
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(timeout=10)
    code, results = _verify(out, launcher, capsys, "--timeout", "10")
    assert code == 1
    failures = _failures(results)
    assert [f for f in failures if f.startswith("reachable pd-decode/0: cannot reach")], failures
    assert not [f for f in failures if " chat/" in f or f.startswith("reachable chat")], failures
