"""Benchmark: exporter scrape time with one dripping and one 200 MB target beside healthy ones.

Target (issue 12, item 4): every scrape within Prometheus' scrape timeout, every healthy target
``up 1`` on every scrape, the exporter's memory bounded by its size cap (not by the 200 MB answer).

Targets, all local HTTP servers on loopback: ``--healthy`` replay servers answering /metrics text
captured from a real tritonserver (tests/fixtures/metrics/triton_stand_in_loaded.txt), one server that
sends its headers and then one byte every 0.3 s, forever, and one that answers 200 MB (no
Content-Length: the size is only known by reading). The exporter runs as the real command
(``python -m generator.cli exporter``, its rendered default settings) in its own process; each
scrape is timed from the client and sends ``X-Prometheus-Scrape-Timeout-Seconds`` as Prometheus does.
The exporter's RSS is sampled every 10 ms during the scrapes. Every process and server started is
stopped at the end.

    .venv/bin/python benchmarks/exporter_hostile.py [--healthy 6] [--scrapes 10] [--scrape-timeout 5]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.render.monitoring import local_exporter_config
from generator.spec import parse_spec

CAPTURED = ROOT / "tests" / "fixtures" / "metrics" / "triton_stand_in_loaded.txt"
MIB = 1 << 20
DRIP_INTERVAL_S = 0.3
LOOPBACK = "127.0.0.1"


def serve(answer, stop: threading.Event) -> ThreadingHTTPServer:
    """A threaded HTTP server on a free loopback port; ``answer(handler, stop)`` writes the reply."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            try:
                answer(self, stop)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the exporter gave up on this answer, as it should

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def healthy(body: bytes):
    def answer(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain; version=0.0.4")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def drip(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.flush()
    while not stop.wait(DRIP_INTERVAL_S):
        handler.wfile.write(b"#")
        handler.wfile.flush()


def huge(size: int):
    chunk = (b"# padding padding padding padding padding padding padding padding\n" * 16_000)[:MIB]

    def answer(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Connection", "close")  # no Content-Length: the body ends with the connection
        handler.end_headers()
        for _ in range(size // MIB):
            if stop.is_set():
                return
            handler.wfile.write(chunk)

    return answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"exporter did not answer {url}")


class RssSampler:
    """Peak RSS of one process, sampled on a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--healthy", type=int, default=6, help="healthy targets beside the two hostile ones (6)"
    )
    parser.add_argument("--scrapes", type=int, default=10, help="scrapes to time (10)")
    parser.add_argument(
        "--scrape-timeout",
        type=float,
        default=5.0,
        help="X-Prometheus-Scrape-Timeout-Seconds sent (5: the shortest the project renders, the local "
        "stack's 5 s interval; deployments scrape every 15 s with Prometheus' default 10 s timeout)",
    )
    parser.add_argument("--huge-mb", type=int, default=200, help="size of the large answer, MiB (200)")
    args = parser.parse_args(argv)
    if args.healthy < 1 or args.scrapes < 1:
        parser.error("--healthy and --scrapes must be at least 1")

    stop = threading.Event()
    body = CAPTURED.read_bytes()
    servers = [serve(healthy(body), stop) for _ in range(args.healthy)]
    servers += [serve(drip, stop), serve(huge(args.huge_mb * MIB), stop)]
    names = [f"healthy-{i}" for i in range(args.healthy)] + ["drip", f"{args.huge_mb} MiB"]
    spec = parse_spec(
        "apiVersion: tritonstack/v1\nname: hostile\nmodels:\n"
        "  - {name: tiny-chat, reference_engine: {}, tokenizer_dir: tok}\n"
        f"pools:\n  - {{name: chat, replicas: {len(servers)}, models: [tiny-chat]}}\n"
    )
    endpoints = {"chat": [(LOOPBACK, 0, 0, int(s.server_address[1])) for s in servers]}
    rows: list[tuple[float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "exporter.yaml"
        config.write_bytes(local_exporter_config(spec, endpoints, {}))
        port = free_port()
        exporter_log = Path(tmp) / "exporter.log"
        with exporter_log.open("wb") as log:
            command = [sys.executable, "-m", "generator.cli", "exporter", "--config", str(config)]
            exporter = subprocess.Popen(
                [*command, "--port", str(port)], cwd=ROOT, stdout=log, stderr=log, start_new_session=True
            )
        try:
            wait_healthy(f"http://{LOOPBACK}:{port}/-/healthy", exporter)
            rss_before = psutil.Process(exporter.pid).memory_info().rss
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": f"{args.scrape_timeout:g}"}
            with RssSampler(exporter.pid) as rss, httpx.Client(timeout=args.scrape_timeout + 30) as client:
                for _ in range(args.scrapes):
                    started = time.perf_counter()
                    response = client.get(f"http://{LOOPBACK}:{port}/metrics", headers=headers)
                    took = time.perf_counter() - started
                    up = {
                        names[int(m.group(1))]: float(m.group(2))
                        for m in re.finditer(
                            r'tritonstack_target_up\{pool="chat",replica="(\d+)"\} (\S+)', response.text
                        )
                    }
                    rows.append((took, up))
            rss_after = psutil.Process(exporter.pid).memory_info().rss
        finally:
            os.killpg(exporter.pid, signal.SIGTERM)
            try:
                exporter.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(exporter.pid, signal.SIGKILL)
                exporter.wait()
            stop.set()
            for server in servers:
                server.shutdown()
                server.server_close()
        reasons = sorted(
            {line.split(": ", 2)[-1] for line in exporter_log.read_text().splitlines() if "is down" in line}
        )

    healthy_names = names[: args.healthy]
    print(
        f"\n{args.healthy} healthy targets, one dripping a byte every {DRIP_INTERVAL_S:g} s, one answering "
        f"{args.huge_mb} MiB; scrape timeout {args.scrape_timeout:g} s"
    )
    print(f"{'scrape':>6} {'seconds':>8} {'healthy up':>11} {'drip up':>8} {'huge up':>8}")
    for index, (took, up) in enumerate(rows, 1):
        healthy_up = sum(up.get(name, 0.0) == 1.0 for name in healthy_names)
        print(
            f"{index:>6} {took:>8.3f} {healthy_up:>5}/{args.healthy:<5} {up.get('drip', float('nan')):>8.0f} "
            f"{up.get(names[-1], float('nan')):>8.0f}"
        )
    times = sorted(took for took, _ in rows)
    all_healthy = all(all(up.get(name) == 1.0 for name in healthy_names) for _, up in rows)
    print(
        f"scrape seconds: median {times[len(times) // 2]:.3f}, max {times[-1]:.3f} "
        f"(target: < {args.scrape_timeout:g}, {'met' if times[-1] < args.scrape_timeout else 'MISSED'}); "
        f"healthy targets up on every scrape: {'yes' if all_healthy else 'NO'}"
    )
    print(
        f"exporter RSS: {rss_before / MIB:.0f} MiB before, peak {rss.peak / MIB:.0f} MiB during, "
        f"{rss_after / MIB:.0f} MiB after ({args.huge_mb} MiB answered by one target)"
    )
    for reason in reasons:
        print(f"logged: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
