"""The router's HTTP/1.1 server: serves an ASGI application (``RouterApp``) on listening sockets.

Why not uvicorn: measured at concurrency 1 (``benchmarks/router_overhead.py``) the router's added
latency is dominated by the code and the system calls it runs per request, cold. uvicorn builds a
request cycle object and its middleware chain for every request and writes the response headers
in a write of their own; here the status line and headers wait for the first body chunk and leave
in the same write (one loopback send, one wake-up of the client fewer), and a response sent in one
piece gets a ``Content-Length``. Parsing is ``httptools`` (llhttp), as in uvicorn.

What it does, and no more: HTTP/1.0 and 1.1, keep-alive with an idle timeout (which also bounds
how long a client may take to send its headers), a 64 KiB bound on the request head, pipelined
requests answered in order (reading pauses while 16 wait), request bodies in either framing with
the socket paused while the application has not read them, writes coalesced per loop turn,
``Expect: 100-continue``, write back-pressure, ``http.disconnect`` when the client goes, a 400 for
unparsable requests, the ASGI lifespan, and a graceful drain: stop accepting, close idle
connections, let requests in flight finish within a deadline, then cut the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import unquote

import httptools

__all__ = ["HttpServer"]

log = logging.getLogger("tritonstack.router")

App = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]

_BODY_HIGH_WATER = 1 << 18  # request body bytes held for the application before reading pauses
_MAX_HEAD_BYTES = 1 << 16  # request line and headers; beyond this the answer is 431
_MAX_PIPELINED = 16  # parsed requests waiting on one connection before reading pauses
_FLUSH_AT = 1 << 16  # coalesced response bytes that go out at once, without waiting for the loop turn
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class _Clock:
    """The ``Date`` header, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._header = b""

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._header


class _Request:
    """One request's ASGI channel: what the parser delivered, and the response state."""

    __slots__ = (
        "body",
        "body_done",
        "chunked",
        "conn",
        "continue_sent",
        "expect_continue",
        "final_delivered",
        "head",
        "keep_alive",
        "pending",
        "remaining",
        "response_done",
        "scope",
        "waiter",
    )

    def __init__(
        self, conn: _Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.final_delivered = False
        self.body: deque[bytes] = deque()
        self.pending = 0
        self.body_done = False
        self.head: bytes | None = None  # status line and headers, waiting for the first body bytes
        self.chunked = False
        self.remaining: int | None = None  # Content-Length still to send, when the app gave one
        self.response_done = False
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        while True:
            if conn.lost or self.response_done:
                return {"type": "http.disconnect"}
            if self.body:
                chunk = self.body.popleft()
                self.pending -= len(chunk)
                conn.resume_if_drained(self)
                more = bool(self.body) or not self.body_done
                self.final_delivered = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            if self.body_done and not self.final_delivered:
                self.final_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.expect_continue and not self.continue_sent and self.head is None:
                self.continue_sent = True
                conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # Wait for more body, or (once the body is read) for the client to go away.
            self.waiter = conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.lost or self.response_done:
            return  # the client is gone (receive() says so), or the response is over
        kind = message["type"]
        if kind == "http.response.start":
            if self.head is not None:
                raise RuntimeError("http.response.start sent twice")
            self._start(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body" or self.head is None:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            body = b""  # headers as for GET, never a body
        head = self.head
        if head:
            self.head = b""
            if self.remaining is None and not self.chunked:
                if not more:
                    head += b"content-length: %d\r\n" % len(body)
                elif self.scope["http_version"] == "1.0":
                    self.keep_alive = False  # HTTP/1.0 has no chunked coding: the close ends the body
                else:
                    self.chunked = True
                    head += b"transfer-encoding: chunked\r\n"
            if self.conn.server.draining:
                self.keep_alive = False
            if not self.keep_alive:
                head += b"connection: close\r\n"
            head += b"\r\n"
        if self.chunked:
            data = (
                head
                + (b"%x\r\n%b\r\n" % (len(body), body) if body else b"")
                + (b"" if more else b"0\r\n\r\n")
            )
        else:
            data = head + body if head else body
            if self.remaining is not None:
                self.remaining -= len(body)
        conn.write(data)
        if not more:
            self.response_done = True
            conn.response_finished(self)
        elif conn.write_paused:
            await conn.drain()

    def _start(self, status: int, headers: Any) -> None:
        parts = [_status_line(status), self.conn.server.clock.date_header()]
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self.remaining = int(value)
            elif lowered == b"transfer-encoding":
                continue  # the server frames the body itself
            elif lowered == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            if b"\r" in value or b"\n" in value:
                raise RuntimeError("invalid header value")
            parts.append(lowered + b": " + value + b"\r\n")
        self.head = b"".join(parts)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs one application task at a time."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        assert server.loop is not None
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.write_paused = False
        self.read_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_pending = False
        self._head_bytes = 0
        self._head_too_large = False
        self._pipeline_paused = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._parsing: _Request | None = None  # the request whose body is being parsed
        self._queue: deque[_Request] = deque()  # parsed (or being parsed) requests, oldest first
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._addresses: tuple[Any, Any] = (None, None)

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self._addresses = (
            tuple(peer[:2]) if isinstance(peer, tuple) else None,
            tuple(local[:2]) if isinstance(local, tuple) else None,
        )
        self.server.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        self._cancel_idle_timer()
        for request in self._queue:
            request.wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(b"protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self._head_too_large:
                self._refuse(b"request line and headers over 64 KiB", 431)
            else:
                self._refuse(f"malformed HTTP request: {exc}".encode())

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ---------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > _MAX_HEAD_BYTES:
            self._head_too_large = True
            raise ValueError("request head too large")  # httptools stops parsing

    def on_headers_complete(self) -> None:
        self._cancel_idle_timer()  # not before: the idle timer also bounds slow headers
        parsed = httptools.parse_url(self._url)
        raw_path = parsed.path
        version = self.parser.get_http_version()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "method": self.parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii", "replace")),
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._addresses[0],
            "server": self._addresses[1],
        }
        expect = any(n == b"expect" and v.lower() == b"100-continue" for n, v in self._headers)
        keep_alive = self.parser.should_keep_alive() and not self.server.draining
        request = _Request(self, scope, keep_alive, expect)
        self._parsing = request
        self._queue.append(request)
        if self._task is None:
            self._task = self.loop.create_task(self._serve())

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        if request is None:
            return
        request.body.append(body)
        request.pending += len(body)
        if request.pending > _BODY_HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        request.wake()

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is not None:
            request.body_done = True
            request.wake()
        self._parsing = None
        if len(self._queue) >= _MAX_PIPELINED and self.transport is not None and not self._pipeline_paused:
            self._pipeline_paused = True  # a client pipelining without reading answers waits
            self.transport.pause_reading()

    # ---------------------------------------------------------------- serving

    async def _serve(self) -> None:
        """Run the application for each queued request in turn (pipelined requests wait)."""
        while self._queue and not self.lost:
            request = self._queue[0]
            self.server.active += 1
            try:
                await self.server.app(request.scope, request.receive, request.send)
            except Exception:
                log.exception("error while serving %s %s", request.scope["method"], request.scope["path"])
                if request.head != b"" and not self.lost:  # nothing written yet: a clean 500
                    request.head = None
                    await request.send({"type": "http.response.start", "status": 500, "headers": []})
                    await request.send({"type": "http.response.body", "body": b"internal server error"})
                elif not request.response_done and self.transport is not None:
                    self.transport.abort()  # a half-sent response cannot be ended cleanly
            finally:
                self.server.active -= 1
                self.server.request_done()
            if not request.response_done and not self.lost and self.transport is not None:
                self.transport.abort()  # the application returned without finishing its response
            self._queue.popleft()
            if (
                self._pipeline_paused
                and len(self._queue) < _MAX_PIPELINED // 2
                and self.transport is not None
            ):
                self._pipeline_paused = False
                self.transport.resume_reading()
        self._task = None
        if not self.lost:
            self._arm_idle_timer()

    def response_finished(self, request: _Request) -> None:
        if not request.keep_alive or not request.body_done:
            # An unread request body cannot be skipped safely on a kept-alive connection.
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        self.resume_if_drained(request)

    def resume_if_drained(self, request: _Request) -> None:
        if self.read_paused and request.pending < _BODY_HIGH_WATER // 2 and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything written during one turn of the event loop leaves in one send.
        Several upstream responses often arrive together under load: one system call, not one
        per token (a loopback send costs tens of microseconds on a busy VM)."""
        if self.transport is None or self.lost:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > _FLUSH_AT:  # an application that sends without yielding
            self.flush()
        elif not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.write_paused or self.lost:
            return
        self._drained = self.loop.create_future()
        try:
            await self._drained
        finally:
            self._drained = None

    def close_if_idle(self) -> None:
        if not self._queue and self.transport is not None:
            self.flush()
            self.transport.close()

    def _refuse(self, reason: bytes, status: int = 400) -> None:
        if self.transport is None:
            return
        if not self._queue:
            body = reason + b"\n"
            self.flush()
            self.transport.write(
                _status_line(status) + b"content-type: text/plain\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
            self.transport.close()
        else:
            self.transport.abort()

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        if self.server.draining:
            self.close_if_idle()
            return
        self._idle = self.loop.call_later(self.server.keep_alive_s, self.close_if_idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


class HttpServer:
    """Serve ``app`` on already bound sockets until :meth:`shutdown`."""

    def __init__(self, app: App, *, keep_alive_s: float = 5.0, backlog: int = 4096) -> None:
        self.app = app
        self.keep_alive_s = keep_alive_s
        self.backlog = backlog
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self.active = 0
        self.draining = False
        self._servers: list[asyncio.base_events.Server] = []
        self._idle_event: asyncio.Event | None = None
        self._cut = False
        self._lifespan: _Lifespan | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self, sockets: list[socket.socket]) -> None:
        """Run the application's lifespan startup, then listen. Raises if startup fails."""
        self.loop = asyncio.get_running_loop()
        self._lifespan = _Lifespan(self.app)
        await self._lifespan.startup()
        for sock in sockets:
            server = await self.loop.create_server(
                lambda: _Connection(self), sock=sock, backlog=self.backlog, start_serving=True
            )
            self._servers.append(server)

    def cut_drain(self) -> None:
        """End a drain now; requests still in flight are cut."""
        self._cut = True
        if self._idle_event is not None:
            self._idle_event.set()

    def request_done(self) -> None:
        if self.active == 0 and self._idle_event is not None:
            self._idle_event.set()

    async def shutdown(self, drain_timeout_s: float) -> None:
        """Stop accepting, let requests in flight finish (at most ``drain_timeout_s``), close."""
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.active and not self._cut:
            self._idle_event = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle_event.wait(), drain_timeout_s)
            except TimeoutError:
                log.warning("drain deadline passed with %d requests in flight; closing them", self.active)
        for conn in list(self.connections):
            if conn.transport is None:
                continue
            if self.active:
                conn.transport.abort()
            else:
                conn.flush()
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        if self._lifespan is not None:
            await self._lifespan.shutdown()


class _Lifespan:
    """The ASGI lifespan protocol: startup before serving, shutdown after."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self._task = asyncio.get_running_loop().create_task(
            self._app(scope, self._inbox.get, self._outbox.put)
        )
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(reply.get("message") or "application startup failed")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._reply()

    async def _reply(self) -> dict[str, Any]:
        assert self._task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        error = self._task.exception()
        return {
            "type": "lifespan.startup.failed",
            "message": str(error) if error else "the application exited",
        }
