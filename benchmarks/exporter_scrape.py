"""Benchmark: one exporter scrape across 8 Triton targets, and the exporter's resident memory.

Bar (issue 4): a scrape under 100 ms on the dev machine; exporter RSS under 80 MB.

Targets are 8 replay servers answering with /metrics text captured from a real tritonserver
(tests/fixtures/metrics/triton_stand_in_loaded.txt), repeated for ``--models`` spec models per
target so the text has the size of a multi-model pool. The exporter runs as the real command
(``python -m generator.cli exporter``) in its own process; scrapes are timed from the client.

    .venv/bin/python benchmarks/exporter_scrape.py [--targets 8] [--models 3] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.render.monitoring import local_exporter_config
from generator.spec import parse_spec

CAPTURED = ROOT / "tests" / "fixtures" / "metrics" / "triton_stand_in_loaded.txt"


def replay_text(models: int) -> bytes:
    captured = CAPTURED.read_text()
    return "".join(captured.replace("tiny-chat_", f"model-{i}_") for i in range(models)).encode()


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--models", type=int, default=3, help="spec models per target")
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args(argv)

    body = replay_text(args.models)
    servers = [serve(body) for _ in range(args.targets)]
    models = [f"model-{i}" for i in range(args.models)]
    spec = parse_spec(
        "apiVersion: tritonstack/v1\nname: bench\nmodels:\n"
        + "".join(f"  - {{name: {m}, reference_engine: {{}}, tokenizer_dir: tok}}\n" for m in models)
        + f"pools:\n  - {{name: chat, replicas: {args.targets}, models: [{', '.join(models)}]}}\n"
    )
    endpoints = {"chat": [("127.0.0.1", 0, 0, s.server_address[1]) for s in servers]}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "exporter.yaml"
        config.write_bytes(local_exporter_config(spec, endpoints, {}))
        probe = socket_port()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "generator.cli", "exporter", "--config", str(config), "--port", str(probe)],
            cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{probe}/metrics"
            _wait(f"http://127.0.0.1:{probe}/-/healthy")
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}
            with httpx.Client() as client:
                for _ in range(10):  # warm-up
                    client.get(url, headers=headers)
                times = []
                for _ in range(args.scrapes):
                    started = time.perf_counter()
                    response = client.get(url, headers=headers)
                    times.append(time.perf_counter() - started)
                    last_up = f'tritonstack_target_up{{pool="chat",replica="{args.targets - 1}"}} 1.0'
                    assert response.status_code == 200 and last_up in response.text
            rss = psutil.Process(exporter.pid).memory_info().rss
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)
            for server in servers:
                server.shutdown()
    times.sort()
    lines = body.count(b"\n")
    print(f"targets={args.targets} models/target={args.models} lines/target={lines} scrapes={args.scrapes}")
    print(
        f"scrape ms: p50={statistics.median(times) * 1e3:.1f} "
        f"p95={times[int(len(times) * 0.95) - 1] * 1e3:.1f} max={times[-1] * 1e3:.1f} (bar: 100)"
    )
    print(f"exporter RSS after scrapes: {rss / 2**20:.1f} MiB (bar: 80)")
    return 0


def socket_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"exporter did not answer {url}")


if __name__ == "__main__":
    sys.exit(main())
