"""The exporter's HTTP side: a WSGI app over our own registry, and the resources it runs with.

``/metrics`` reads Prometheus' ``X-Prometheus-Scrape-Timeout-Seconds`` and gives the collector that
budget minus the configured headroom, so upstream fetches end before Prometheus gives up on us.
``/`` is a landing page, ``/-/healthy`` answers without touching any upstream.

:class:`ExporterRuntime` owns what a running exporter needs (worker threads, NVML session) and
closes all of it on exit; nothing is created at import. Targets are fetched by ``fetch`` (a total
deadline and a size cap per target), one connection per fetch.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from generator.errors import RuntimeSetupError
from generator.exporter.collector import TritonstackCollector
from generator.exporter.config import ExporterConfig
from generator.exporter.fetch import TargetFetchError, metrics_fetcher
from generator.exporter.gpu_memory import Nvml

__all__ = ["TargetFetchError", "resolve_addresses", "metrics_app", "ExporterRuntime"]

TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
MIN_BUDGET_S = 0.05

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def resolve_addresses(name: str) -> list[str]:
    """Every address a DNS name resolves to (a headless Service gives one per ready pod)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetFetchError(f"cannot resolve {name}: {exc.strerror}") from None
    return sorted({str(info[4][0]) for info in infos})


def metrics_app(registry: CollectorRegistry, collector: TritonstackCollector, config: ExporterConfig) -> WsgiApp:
    """WSGI app: /metrics with the scrape-timeout budget, a landing page, and a health check."""
    exposition = make_wsgi_app(registry)
    settings = config.exporter
    landing = (
        "<html><head><title>tritonstack exporter</title></head><body>"
        f"<h1>tritonstack exporter</h1><p>Stack {config.stack}: {len(config.pools)} pool(s).</p>"
        '<p><a href="/metrics">Metrics</a></p></body></html>'
    ).encode()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            budget = settings.upstream_timeout_s
            header = environ.get(TIMEOUT_HEADER)
            if header:
                try:
                    budget = max(MIN_BUDGET_S, float(header) - settings.timeout_headroom_s)
                except ValueError:
                    pass  # a malformed header falls back to the configured budget
            with collector.budget(budget):
                return exposition(environ, start_response)
        if path == "/-/healthy":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"OK\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found; see /metrics\n"]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung scrape must not keep the process alive at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass


class ExporterRuntime:
    """A running exporter: ``with ExporterRuntime(config) as runtime: runtime.serve_forever()``."""

    def __init__(self, config: ExporterConfig, *, bind: str | None = None, port: int | None = None) -> None:
        self.config = config
        settings = config.exporter
        self._executor = ThreadPoolExecutor(max_workers=settings.max_parallel, thread_name_prefix="exporter")
        self._nvml = Nvml()
        if settings.nvml:
            self._nvml.start()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = TritonstackCollector(
            config,
            fetch=metrics_fetcher(settings.max_target_bytes),
            resolve=resolve_addresses,
            executor=self._executor,
            nvml=self._nvml,
        )
        self.registry.register(self.collector)
        app = metrics_app(self.registry, self.collector, config)
        host = bind if bind is not None else settings.bind
        try:
            self._server = make_server(
                host, settings.port if port is None else port, app, _ThreadingServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            self.close()
            raise RuntimeSetupError(
                f"exporter cannot listen on {host}:{settings.port if port is None else port}: {exc.strerror}"
            ) from None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serving_forever (from another thread or a signal handler)."""
        threading.Thread(target=self._server.shutdown, daemon=True).start()

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.server_close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._nvml.stop()

    def __enter__(self) -> ExporterRuntime:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
