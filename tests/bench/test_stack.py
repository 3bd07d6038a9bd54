"""End to end on CPU: examples/bench-profiles.yaml (two timing profiles of the reference engine) runs
on real tritonservers behind the real router, and ``tritonstack bench`` compares the two models like
two stacks through the router's OpenAI API.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from generator.bench.report import SCHEMA_PATH
from generator.cli import main as cli_main
from generator.render.options import RenderOptions
from generator.render.routes import local_routes
from generator.runtime.launcher import free_ports
from tests.support.paths import EXAMPLES
from tests.support.stack import start_stack

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROUTER_READY_TIMEOUT_S = 120.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@pytest.fixture(scope="module")
def profiles_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The router's URL, in front of the tritonservers of examples/bench-profiles.yaml."""
    base = tmp_path_factory.mktemp("bench-profiles")
    launcher = start_stack(EXAMPLES / "bench-profiles.yaml", base / "build")
    router: subprocess.Popen[bytes] | None = None
    try:
        local = base / "local"
        routes = local / "router" / "routes.yaml"
        routes.parent.mkdir(parents=True)
        routes.write_bytes(local_routes(launcher.stack, launcher.endpoints(), RenderOptions(EXAMPLES, local)))
        [port] = free_ports(1)
        log = (base / "router.log").open("wb")
        router = subprocess.Popen(
            [sys.executable, "-m", "generator.cli", "router", "--config", str(routes),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ROUTER_READY_TIMEOUT_S
        while not _ready(url):
            if router.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the router did not become ready:\n{(base / 'router.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if router is not None and router.poll() is None:
            os.killpg(router.pid, signal.SIGTERM)
            try:
                router.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(router.pid, signal.SIGKILL)
                router.wait(timeout=5)
        launcher.stop()


def _run(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli_main(["bench", *argv])
    return code, stdout.getvalue(), stderr.getvalue()


def test_bench_compares_two_profiles_through_the_router(profiles_router: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code, stdout, stderr = _run([
        "--endpoint", f"fast={profiles_router}", "--endpoint", f"slow={profiles_router}/v1",
        "--model", "fast=tiny-fast", "--model", "slow=tiny-slow", "--baseline", "slow",
        "--max-tokens", "16", "--concurrency", "1,2", "--requests", "4", "--serial-requests", "3",
        "--warmup", "1", "--tokenizer", str(EXAMPLES / "tokenizers" / "tiny-chat"), "--out", str(out),
    ])
    assert code == 0, stdout + stderr
    assert "against baseline slow" in stdout and "tokens counted from the server's usage" in stdout
    document = json.loads((out / "results.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    assert document["client"]["transformers"]  # a tokenizer was given: its version is recorded
    for stack in document["stacks"]:
        assert stack["token_source"] == "usage"
        assert [p["label"] for p in stack["points"]] == ["serial", "c=1", "c=2"]
        for point in stack["points"]:
            assert point["failed"] == 0 and point["completed"] == point["requests"]
            # Figures agree with each other: tokens/s × time ≈ tokens, TTFT ≤ wall.
            assert point["aggregate_tokens_per_s"] * point["duration_s"] == pytest.approx(
                point["output_tokens"], rel=1e-4
            )
            assert point["ttft_s"]["p50"] <= point["latency_s"]["p50"]
            for request in point["per_request"]:
                assert 0 < request["ttft_s"] <= request["latency_s"] <= point["duration_s"]
                assert 1 <= request["output_tokens"] <= 16
    for png in ("throughput.png", "ttft.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    assert (out / "results.csv").read_text().count("\n") == 1 + 2 * 3


def test_bench_reports_what_the_router_refuses(profiles_router: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main([
        "bench",
        "--endpoint", f"r={profiles_router}", "--model", "no-such-model", "--warmup", "1",
        "--serial-requests", "1", "--concurrency", "1", "--requests", "1",
    ])
    assert code == 1
    err = capsys.readouterr().err
    assert "all 1 warm-up requests failed; the last with http_status: HTTP 404" in err
