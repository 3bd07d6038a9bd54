"""``tritonstack router``: serve a rendered ``routes.yaml`` on one port.

Signals: SIGTERM/SIGINT drain (``/ready`` turns 503, new requests get 503, the listening socket
closes, requests in flight finish within ``drain_timeout_s``); SIGHUP re-reads the config and swaps
it in without dropping requests (a broken file is reported and the old config stays).

``--workers N`` starts N processes that each bind the port with ``SO_REUSEPORT``, so the kernel
spreads connections and one node's router is not capped by one event loop. The parent forwards
SIGHUP/SIGTERM to them and exits with the first non-zero status.

Logs: one record per line whatever a client sent. ``--log-format text`` escapes control characters
in the message (a newline in a chat role or model name cannot write a line of its own) and indents
a traceback's lines under its record; ``--log-format json`` writes JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from generator.errors import RuntimeSetupError, TritonstackError
from generator.router.app import RouterApp
from generator.router.config import Routes, load_routes
from generator.router.server import ClientLimits, HttpServer
from generator.router.upstream import GrpcUpstream, HttpUpstream, Upstream

__all__ = ["bind_socket", "configure", "log_formatter", "make_upstream", "run"]

log = logging.getLogger("tritonstack.router")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, type=Path, help="routes.yaml rendered by `tritonstack render`"
    )
    parser.add_argument("--host", default=None, help="listen address (default: router.bind from the config)")
    parser.add_argument(
        "--port", type=int, default=None, help="listen port, 0 for any free one (default: router.port)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes sharing the port (default: router.workers)"
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or JSON lines (one object each)",
    )


# C0 and C1 control characters and DEL, but not the space: what a terminal or a log shipper
# could read as the end of a record or as an escape sequence.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


class _TextFormatter(logging.Formatter):
    """``time logger message``; the message's control characters escaped, a traceback indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        lines = super().formatException(ei).splitlines()
        return "\n".join("  " + line.translate(_CONTROL) for line in lines)

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("  " + line.translate(_CONTROL) for line in stack_info.splitlines())


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def log_formatter(kind: str) -> logging.Formatter:
    """The formatter of ``--log-format``: ``text`` or ``json``."""
    formatters: dict[str, Callable[[], logging.Formatter]] = {"text": _TextFormatter, "json": _JsonFormatter}
    if kind not in formatters:
        raise ValueError(f"unknown log format {kind!r}; use one of {sorted(formatters)}")
    return formatters[kind]()


def _configure_logging(level: str, kind: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(kind))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def make_upstream(routes: Routes) -> Upstream:
    settings = routes.router
    if settings.upstream == "http":
        return HttpUpstream(settings.connect_timeout_s)
    return GrpcUpstream(settings.connect_timeout_s)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


async def _reload(app: RouterApp, path: Path) -> None:
    try:
        routes = await asyncio.to_thread(load_routes, path)
        await app.reload(routes)
    except TritonstackError as exc:
        log.error("SIGHUP: keeping the current config: %s", exc)


def _serve(
    config_path: Path,
    sock: socket.socket,
    log_level: str,
    on_started: Callable[[], None],
    metrics_dir: str | None = None,
    log_format: str = "text",
) -> int:
    _configure_logging(log_level, log_format)
    routes = load_routes(config_path)
    app = RouterApp(routes, make_upstream(routes), metrics_dir=metrics_dir)
    server = HttpServer(app, ClientLimits.from_settings(routes.router))

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def drain() -> None:
            app.draining = True  # /ready turns 503 and new requests get 503 at once
            stop.set()

        def interrupt() -> None:
            if stop.is_set():  # a second Ctrl-C: stop waiting for requests in flight
                server.cut_drain()
            drain()

        # A repeated SIGTERM (to the process group, then forwarded by a --workers parent) changes nothing.
        loop.add_signal_handler(signal.SIGTERM, drain)
        loop.add_signal_handler(signal.SIGINT, interrupt)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(app, config_path)))
        try:
            await server.start([sock])
        except Exception as exc:  # noqa: BLE001 (startup failures are reported, never a traceback)
            print(f"error: router startup failed: {exc}", file=sys.stderr, flush=True)
            return 1
        on_started()
        await stop.wait()
        await server.shutdown(app.routes.router.drain_timeout_s)
        return 0

    try:
        import uvloop

        return uvloop.run(serve())
    except ImportError:
        return asyncio.run(serve())


def _worker(
    config_path: Path, host: str, port: int, log_level: str, log_format: str, started: Any, metrics_dir: str
) -> None:
    sock = bind_socket(host, port)
    sys.exit(_serve(config_path, sock, log_level, started.set, metrics_dir, log_format))


def run(args: argparse.Namespace) -> int:
    routes = load_routes(args.config)
    settings = routes.router
    host = args.host or settings.bind
    port = settings.port if args.port is None else args.port
    workers = args.workers or settings.workers
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise RuntimeSetupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if workers == 1:
        host, port = sock.getsockname()[:2]
        announce = f"tritonstack router: http://{host}:{port}"
        return _serve(args.config, sock, args.log_level, lambda: print(announce, flush=True), None, args.log_format)
    return _run_workers(args.config, sock, workers, args.log_level, args.log_format)


def _run_workers(
    config_path: Path, sock: socket.socket, workers: int, log_level: str, log_format: str
) -> int:
    # The parent holds the bound (not listening) socket so port 0 resolves once for every worker.
    host, port = sock.getsockname()[:2]
    # Any worker may answer a scrape: they share their metrics through files (router/metrics.py).
    # prometheus_client reads this variable when a worker imports it, so it is set before spawning.
    metrics_dir = tempfile.mkdtemp(prefix="tritonstack-router-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    started = [context.Event() for _ in range(workers)]
    children = [
        context.Process(
            target=_worker, args=(config_path, host, port, log_level, log_format, event, metrics_dir)
        )
        for event in started
    ]
    try:
        for child in children:
            child.start()
        return _supervise(children, started, host, port, workers, metrics_dir)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    children: list[Any], started: list[Any], host: str, port: int, workers: int, metrics_dir: str
) -> int:
    from prometheus_client.multiprocess import mark_process_dead

    def forward(sig: int, frame: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    # Announce once every worker listens (or one of them died trying).
    while not all(e.is_set() for e in started) and all(c.is_alive() for c in children):
        time.sleep(0.05)
    if all(e.is_set() for e in started):
        print(f"tritonstack router: http://{host}:{port} ({workers} workers)", flush=True)
    else:  # a worker could not start: do not run short-handed
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
    status = 0
    pending = list(children)
    while pending:
        for child in list(pending):
            child.join(timeout=0.2)
            if child.exitcode is None:
                continue
            pending.remove(child)
            mark_process_dead(child.pid, metrics_dir)  # its live gauges stop counting
            if child.exitcode:
                print(
                    f"tritonstack router: worker {child.pid} exited with {child.exitcode}",
                    file=sys.stderr,
                    flush=True,
                )
            status = status or child.exitcode
    return 0 if status == 0 else 1
