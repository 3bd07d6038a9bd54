"""The exporter against hostile /metrics targets (issue 12, item 4): real local HTTP servers.

One target drips a byte every 0.3 s (in its body, or in its status line), another answers 200 MB;
healthy targets beside them serve captured Triton text. The exporter runs in-process
(:class:`ExporterRuntime`, its real fetcher and thread pool) and is scraped over HTTP as Prometheus
would, with the scrape-timeout header. A hostile target must be down with a reason in the log,
never hold a scrape past its budget, never starve a healthy target, never grow memory past its cap.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest

from generator.exporter.config import parse_config
from generator.exporter.fetch import TargetFetchError, fetch_metrics
from generator.exporter.server import ExporterRuntime
from tests.support import paths

FIXTURES = paths.FIXTURES / "metrics"
LOADED = (FIXTURES / "triton_stand_in_loaded.txt").read_bytes()
MIB = 1 << 20
HUGE_BYTES = 200 * MIB
DRIP_INTERVAL_S = 0.3


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour: Callable[[BaseHTTPRequestHandler, threading.Event], None]
    stop: threading.Event

    def do_GET(self) -> None:
        try:
            type(self).behaviour(self, type(self).stop)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the exporter gave up on us, as it should

    def log_message(self, format: str, *args: object) -> None:
        pass


def healthy(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; version=0.0.4")
    handler.send_header("Content-Length", str(len(LOADED)))
    handler.end_headers()
    handler.wfile.write(LOADED)


def drip_body(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.flush()
    while not stop.wait(DRIP_INTERVAL_S):
        handler.wfile.write(b"#")
        handler.wfile.flush()


def drip_head(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 10_000:
        if stop.wait(DRIP_INTERVAL_S):
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()


def huge(*, announced: bool) -> Callable[[BaseHTTPRequestHandler, threading.Event], None]:
    chunk = (b"# padding padding padding padding padding padding padding padding\n" * 16_000)[:MIB]

    def answer(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        if announced:
            handler.send_header("Content-Length", str(HUGE_BYTES))
        else:
            handler.send_header("Connection", "close")  # the body ends when the connection does
        handler.end_headers()
        for _ in range(HUGE_BYTES // MIB):
            if stop.is_set():
                return
            handler.wfile.write(chunk)

    return answer


Serve = Callable[[Callable[[BaseHTTPRequestHandler, threading.Event], None]], int]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a local HTTP server on a free loopback port; every one stops when the test ends."""
    stop = threading.Event()
    servers: list[ThreadingHTTPServer] = []

    def start(behaviour: Callable[[BaseHTTPRequestHandler, threading.Event], None]) -> int:
        handler = type("Handler", (_Handler,), {"behaviour": staticmethod(behaviour), "stop": stop})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    try:
        yield start
    finally:
        stop.set()
        for server in servers:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def exporter_for(ports: list[int], settings: str) -> Iterator[ExporterRuntime]:
    """An exporter serving on a thread of this process (as the command serves on its main thread)."""
    replicas = "".join(f"      - {{host: 127.0.0.1, metrics: {port}}}\n" for port in ports)
    config = parse_config(
        "apiVersion: tritonstack/exporter-v1\nstack: hostile\n"
        f"exporter: {{nvml: false, {settings}}}\n"
        "pools:\n  chat:\n    role: aggregated\n    models: [tiny-chat]\n    replicas:\n" + replicas
    )
    with ExporterRuntime(config, bind="127.0.0.1", port=0) as runtime:
        server = threading.Thread(target=runtime.serve_forever, name="exporter-http", daemon=True)
        server.start()
        try:
            yield runtime
        finally:
            runtime.shutdown()
            server.join(timeout=5)


def scrape(runtime: ExporterRuntime, scrape_timeout_s: float) -> tuple[float, dict[str, float]]:
    """One scrape as Prometheus makes it; (seconds it took, tritonstack_target_up by replica)."""
    started = time.monotonic()
    response = httpx.get(
        f"http://127.0.0.1:{runtime.port}/metrics",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(scrape_timeout_s)},
        timeout=30,
    )
    took = time.monotonic() - started
    assert response.status_code == 200
    up = {
        match.group(1): float(match.group(2))
        for match in re.finditer(r'tritonstack_target_up\{pool="chat",replica="(\d+)"\} (\S+)', response.text)
    }
    return took, up


@pytest.mark.parametrize("drip", [drip_body, drip_head], ids=["body", "status-line"])
def test_a_dripping_target_neither_holds_the_scrape_nor_starves_healthy_targets(serve: Serve, drip) -> None:
    ports = [serve(healthy), serve(drip), serve(healthy)]
    # Four workers: before the fix each scrape left one more worker pinned on the drip, and from the
    # fourth scrape on healthy targets found no worker and were reported down. A budget of 1 s under
    # a 2.5 s scrape timeout: the margin is for a busy machine, the budget keeps the test short.
    with exporter_for(ports, "max_parallel: 4, timeout_headroom_s: 1.5") as runtime:
        for attempt in range(6):
            took, up = scrape(runtime, scrape_timeout_s=2.5)
            assert up == {"0": 1.0, "1": 0.0, "2": 1.0}, f"scrape {attempt}"
            assert took < 2.5, f"scrape {attempt} took {took:.2f} s, past Prometheus' scrape timeout"


def test_each_target_has_its_own_deadline_below_the_scrape_budget(serve: Serve) -> None:
    ports = [serve(drip_body), serve(healthy)]
    with exporter_for(ports, "target_timeout_s: 0.4") as runtime:
        took, up = scrape(runtime, scrape_timeout_s=10)
    assert up == {"0": 0.0, "1": 1.0}
    assert took < 1.5  # the drip was cut at 0.4 s, not at the 9.5 s the scrape could have used


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_a_200mb_answer_is_refused_with_bounded_memory(
    serve: Serve, caplog: pytest.LogCaptureFixture, announced: bool
) -> None:
    ports = [serve(huge(announced=announced)), serve(healthy)]
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    caplog.set_level(logging.WARNING, logger="tritonstack.exporter")
    try:
        with exporter_for(ports, "upstream_timeout_s: 10") as runtime:
            took, up = scrape(runtime, scrape_timeout_s=10)
    finally:
        sampling.set()
        sampler.join()
    assert up == {"0": 0.0, "1": 1.0}
    assert took < 9.5
    assert peak - baseline < 100 * MIB, f"exporter grew by {(peak - baseline) / MIB:.0f} MiB"
    assert "larger than max_target_bytes (16 MiB)" in caplog.text


# --- the fetcher on its own -------------------------------------------------------------------------


def test_fetch_returns_the_text_of_a_healthy_target(serve: Serve) -> None:
    port = serve(healthy)
    assert fetch_metrics(f"http://127.0.0.1:{port}/metrics", 2.0, max_bytes=16 * MIB) == LOADED.decode()


def test_fetch_gives_up_at_its_deadline_on_a_drip(serve: Serve) -> None:
    port = serve(drip_body)
    started = time.monotonic()
    with pytest.raises(TargetFetchError, match=r"no complete answer within 0\.7 s"):
        fetch_metrics(f"http://127.0.0.1:{port}/metrics", 0.7, max_bytes=16 * MIB)
    assert time.monotonic() - started < 0.9


def test_fetch_refuses_an_answer_over_the_cap(serve: Serve) -> None:
    port = serve(huge(announced=False))
    with pytest.raises(TargetFetchError, match=r"larger than max_target_bytes \(1 MiB\)"):
        fetch_metrics(f"http://127.0.0.1:{port}/metrics", 5.0, max_bytes=MIB)


def test_fetch_names_a_non_200_and_a_refused_connection(serve: Serve) -> None:
    def not_found(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_error(404)

    port = serve(not_found)
    with pytest.raises(TargetFetchError, match=r"/metrics: HTTP 404"):
        fetch_metrics(f"http://127.0.0.1:{port}/metrics", 2.0, max_bytes=MIB)
    with socket.socket() as probe:  # a free port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = f"127.0.0.1:{closed}/metrics: cannot connect: Connection refused"
    with pytest.raises(TargetFetchError, match=refused):
        fetch_metrics(f"http://127.0.0.1:{closed}/metrics", 2.0, max_bytes=MIB)
