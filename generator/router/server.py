"""The router's HTTP/1.1 server: serves an ASGI application (``RouterApp``) on listening sockets.

Why not uvicorn: measured at concurrency 1 (``benchmarks/router_overhead.py``) the router's added
latency is dominated by the code and the system calls it runs per request, cold. uvicorn builds a
request cycle object and its middleware chain for every request and writes the response headers
in a write of their own; here the status line and headers wait for the first body chunk and leave
in the same write (one loopback send, one wake-up of the client fewer), and a response sent in one
piece gets a ``Content-Length``. Parsing is ``httptools`` (llhttp), as in uvicorn, which
``tests/router/test_server.py`` also runs against, as a differential check.

What it does, and no more: HTTP/1.0 and 1.1, keep-alive, a 64 KiB bound on the request head,
pipelined requests answered in order (reading pauses while 16 wait), request bodies in either
framing with the socket paused while the application has not read them, writes coalesced per loop
turn, ``Expect: 100-continue``, write back-pressure, ``http.disconnect`` when the client goes, the
ASGI lifespan, and a graceful drain: stop accepting, close idle connections, let requests in flight
finish within a deadline, then cut the rest.

Hostile and careless clients (issue 12), with the limits of :class:`ClientLimits`:

* every phase a client controls has a deadline: idle keep-alive (closed silently), the head from
  its first byte (408), the body from the end of the head (408), and the whole request from its
  first byte to the end of the response (408 while the body is still owed, else 504; the
  application sees ``http.disconnect``);
* a cap on open connections: at the cap the connection that has waited longest on its client
  (idle, or in the middle of sending a request) is answered 503 and closed to make room, so slow
  clients cannot starve ``/health``; when every connection is busy with a request the new one
  gets the 503 instead;
* requests already parsed are answered before a refusal (garbage after them, a client's
  half-close), and requests after a ``Connection: close`` are ignored;
* refused: a ``Transfer-Encoding`` other than exactly ``chunked`` (smuggling relies on the
  difference between two parsers' readings of it), malformed chunked bodies, HTTP versions other
  than 1.0/1.1 (505); ``Upgrade`` (``h2c`` from ``curl --http2``) is declined by answering in
  HTTP/1.1, as RFC 9110 §7.8 allows;
* an answer sent while the client is still sending a body says ``connection: close`` and reaches
  the client: the server stops writing, keeps reading (and dropping) for a while, then closes,
  instead of a reset that would destroy the answer in the client's receive buffer;
* every error the server writes itself has OpenAI's body, ``{"error": {message, type, param, code}}``.

The scope carries ``tritonstack.arrival_ns``: ``time.monotonic_ns()`` when the first byte of the
request head arrived, so the application can count queueing in front of it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import unquote

import httptools

from generator.router.protocol import ApiError, error_body
from generator.spec.router import RouterSettings

__all__ = ["ARRIVAL_NS", "ClientLimits", "HttpServer"]

log = logging.getLogger("tritonstack.router")

App = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]

ARRIVAL_NS = "tritonstack.arrival_ns"  # scope key: monotonic ns when the request head's first byte came
_BODY_HIGH_WATER = 1 << 18  # request body bytes held for the application before reading pauses
_MAX_HEAD_BYTES = 1 << 16  # request line and headers; beyond this the answer is 431
_MAX_PIPELINED = 16  # parsed requests waiting on one connection before reading pauses
_FLUSH_AT = 1 << 16  # coalesced response bytes that go out at once, without waiting for the loop turn
_STATUS_LINES: dict[int, bytes] = {}


@dataclass(frozen=True)
class ClientLimits:
    """What one client connection may take, from the ``router:`` settings."""

    keep_alive_s: float  # idle between requests; the connection is closed silently
    head_timeout_s: float  # first byte of a request head → end of the head
    body_timeout_s: float  # end of the head → end of the body
    request_timeout_s: float  # first byte of the head → end of the response
    max_connections: int  # open client connections in this process
    retry_after_s: int  # the Retry-After of a 503 at the connection cap

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> ClientLimits:
        return cls(
            keep_alive_s=settings.client_keep_alive_s,
            head_timeout_s=settings.client_head_timeout_s,
            body_timeout_s=settings.client_body_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            max_connections=settings.max_connections,
            retry_after_s=settings.retry_after_s,
        )

    def replace(self, **changes: Any) -> ClientLimits:
        return replace(self, **changes)


@dataclass(frozen=True)
class _Refusal:
    """An error the server answers itself, then closes the connection."""

    status: int
    message: str
    code: str
    kind: str = "invalid_request_error"
    retry_after: int | None = None

    def response(self, date_header: bytes) -> bytes:
        body = error_body(ApiError(self.status, self.message, self.kind, code=self.code))
        retry = b"retry-after: %d\r\n" % self.retry_after if self.retry_after is not None else b""
        return (
            _status_line(self.status)
            + date_header
            + b"content-type: application/json\r\nconnection: close\r\n"
            + retry
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the connection holds the refusal."""


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
        "deadline",
        "expect_continue",
        "failed",
        "final_delivered",
        "head",
        "keep_alive",
        "pending",
        "remaining",
        "response_done",
        "scope",
        "upgrade_framing",
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
        self.failed = False  # the server answered it (deadline, broken body): the app sees a disconnect
        self.body: deque[bytes] = deque()
        self.pending = 0
        self.body_done = False
        self.head: bytes | None = None  # status line and headers, waiting for the first body bytes
        self.chunked = False
        self.remaining: int | None = None  # Content-Length still to send, when the app gave one
        self.response_done = False
        self.waiter: asyncio.Future[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None  # the whole-request deadline
        self.upgrade_framing: bytes | None = None  # an Upgrade request's body framing (see _after_upgrade)

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
            if conn.server.draining or not self.body_done:
                # An answer before the whole body (a 413) ends the connection: the rest of the body
                # cannot be skipped safely. The client learns it from the header.
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
        self.limits = server.limits
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
        self._pipeline_paused = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing: bytes | None = None  # the head's Content-Length or Transfer-Encoding line
        self._parsing: _Request | None = None  # the request whose body is being parsed
        self._queue: deque[_Request] = deque()  # parsed (or being parsed) requests, oldest first
        self._task: asyncio.Task[None] | None = None
        self._addresses: tuple[Any, Any] = (None, None)
        # The client's phase and its deadline: "idle", "head", "body" or "linger".
        self._timer: asyncio.TimerHandle | None = None
        self._phase = ""
        self._in_head = False  # a request head has begun and not ended
        self._arrival_ns = 0
        self._arrival = 0.0  # the same instant on the loop's clock
        self._refusal: _Refusal | None = None  # set by a parser callback that refuses the request
        self._closing: _Refusal | None = None  # answered once the requests before it are
        self._ignore_rest = False  # nothing more is parsed; what the client sends is dropped
        self._lingering = False
        self._body_only = False  # parsing the body of an Upgrade request (see _after_upgrade)
        self._over_cap = False

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
        server = self.server
        if len(server.connections) >= self.limits.max_connections and not server.evict_one():
            self._over_cap = True  # not counted: it lingers only until the client has read the 503
            self._finish(server.busy_refusal())
            return
        server.connections.add(self)
        server.waiting[self] = None
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        self.server.waiting.pop(self, None)
        self._cancel_timer()
        for request in self._queue:
            request.wake()
            if request.deadline is not None:
                request.deadline.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # No eof_received: a client's FIN closes the connection and the application sees
    # http.disconnect (a client that gave up is far more common than one that half-closed and
    # still reads; a cancelled generation frees the GPU).

    def data_received(self, data: bytes) -> None:
        if self._ignore_rest:
            return  # after a refusal, a Connection: close request, or while lingering
        self._feed(data)
        # Deadlines are armed here, once per read, not once per parser event.
        if self._ignore_rest:
            return
        if self._in_head:
            if self._phase != "head":
                self._set_timer_at(self._arrival + self.limits.head_timeout_s, self._head_timed_out, "head")
        elif self._parsing is not None:
            if self._phase != "body":
                self._set_timer_at(
                    self.loop.time() + self.limits.body_timeout_s, self._body_timed_out, "body"
                )
        elif self._timer is not None:
            self._cancel_timer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            if self._ignore_rest:
                return  # data after a Connection: close request is not read
            refusal = self._refusal
            if refusal is None and "PRI" in str(exc):  # the HTTP/2 connection preface
                refusal = _Refusal(505, "HTTP/2 is not supported; use HTTP/1.1", "http_version_not_supported")
            self._refuse(refusal or _Refusal(400, f"malformed HTTP request: {exc}", "malformed_request"))

    def _after_upgrade(self, rest: bytes) -> None:
        """Decline an ``Upgrade`` (``h2c``) by going on in HTTP/1.1. llhttp stops at the end of the
        head and treats what follows as the new protocol (httptools skips the body of an upgrade
        request), so a fresh parser reads on; a body the head declared is parsed behind a
        synthetic head carrying the same framing."""
        self.parser = httptools.HttpRequestParser(self)
        request = self._parsing
        if request is not None and request.scope["method"] == "CONNECT":
            request.keep_alive = False  # a tunnel is not offered: answer and close
            self._ignore_rest = True
            return
        if request is not None and request.upgrade_framing is not None:
            self._body_only = True
            self._feed(b"PUT / HTTP/1.1\r\n" + request.upgrade_framing + b"\r\n\r\n")
        if rest and not self._ignore_rest:
            self._feed(rest)

    # ---------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        if self._body_only:
            return
        if self._ignore_rest:
            raise _Refused  # after a Connection: close request
        self._arrival_ns = time.monotonic_ns()
        self._arrival = self.loop.time()
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._framing = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._body_only:
            return
        name = name.lower()
        if name == b"transfer-encoding":
            # Exactly "chunked": a list ("identity, chunked", "gzip, chunked") is read differently by
            # different parsers, which is what request smuggling relies on.
            if value.strip().lower() != b"chunked":
                shown = value.decode("latin-1")[:64]
                self._refusal = _Refusal(
                    400,
                    f"Transfer-Encoding {shown!r} is not supported; only chunked is",
                    "unsupported_transfer_encoding",
                )
                raise _Refused
            self._framing = b"transfer-encoding: chunked"
        elif name == b"content-length":
            self._framing = b"content-length: " + value
        self._headers.append((name, value))
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > _MAX_HEAD_BYTES:
            self._refusal = _Refusal(
                431, "request line and headers over 64 KiB", "request_header_fields_too_large"
            )
            raise _Refused  # httptools stops parsing

    def on_headers_complete(self) -> None:
        if self._body_only:
            return
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._refusal = _Refusal(
                505, f"HTTP/{version} is not supported; use HTTP/1.1", "http_version_not_supported"
            )
            raise _Refused
        parsed = httptools.parse_url(self._url)
        raw_path = parsed.path
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "method": parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii", "replace")),
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._addresses[0],
            "server": self._addresses[1],
            ARRIVAL_NS: self._arrival_ns,
        }
        expect = any(n == b"expect" and v.lower() == b"100-continue" for n, v in self._headers)
        keep_alive = parser.should_keep_alive() and not self.server.draining
        request = _Request(self, scope, keep_alive, expect)
        if parser.should_upgrade() and self._framing not in (None, b"content-length: 0"):
            request.upgrade_framing = self._framing
        request.deadline = self.loop.call_at(
            self._arrival + self.limits.request_timeout_s, self._request_timed_out, request
        )
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
        if request is None:
            return
        if request.upgrade_framing is not None and not self._body_only:
            return  # the body comes after the upgrade exception (see _after_upgrade)
        self._body_only = False
        request.body_done = True
        request.wake()
        self._parsing = None
        self.server.waiting.pop(self, None)  # the server's turn now, not the client's
        if not request.keep_alive:
            self._ignore_rest = True  # nothing after a Connection: close request is read
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
                if request.head != b"" and not request.response_done and not self.lost:
                    request.head = None  # nothing written yet: a clean 500
                    error = ApiError(
                        500, "internal error in the router", "server_error", code="internal_error"
                    )
                    headers = [(b"content-type", b"application/json")]
                    await request.send({"type": "http.response.start", "status": 500, "headers": headers})
                    await request.send({"type": "http.response.body", "body": error_body(error)})
                elif not request.response_done and self.transport is not None:
                    self.transport.abort()  # a half-sent response cannot be ended cleanly
            finally:
                self.server.active -= 1
                self.server.request_done()
            if not request.response_done and not self.lost and self.transport is not None:
                self.transport.abort()  # the application returned without finishing its response
            if self._queue and self._queue[0] is request:
                self._queue.popleft()
            if (
                self._pipeline_paused
                and len(self._queue) < _MAX_PIPELINED // 2
                and self.transport is not None
                and not self._lingering
            ):
                self._pipeline_paused = False
                self.transport.resume_reading()
        self._task = None
        self._queue_drained()

    def _queue_drained(self) -> None:
        """Every parsed request is answered: refuse what came after them, close, or wait idle."""
        if self.lost or self._lingering:
            return
        if self._closing is not None:
            self._finish(self._closing)
        elif not self._in_head and self._parsing is None:
            self.server.waiting[self] = None
            self._arm_idle_timer()

    def response_finished(self, request: _Request) -> None:
        if request.deadline is not None:
            request.deadline.cancel()
            request.deadline = None
        if not request.keep_alive:
            if self._parsing is request:
                self._parsing = None  # the rest of an unread body is dropped with the connection
            self._ignore_rest = True
            self._finish(None)
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

    # ---------------------------------------------------------------- refusals and closing

    def _refuse(self, refusal: _Refusal) -> None:
        """Stop parsing and refuse the request being received."""
        self._ignore_rest = True
        self._in_head = False
        if self._parsing is not None:
            self._fail_request(self._parsing, refusal)
        else:
            self._close_with(refusal)

    def _fail_request(self, request: _Request, refusal: _Refusal) -> None:
        """The request whose body is being received cannot complete: answer ``refusal`` in its
        place once the requests before it are answered (its application sees a disconnect)."""
        self._ignore_rest = True
        self._parsing = None
        if request.deadline is not None:
            request.deadline.cancel()
            request.deadline = None
        if self._queue and self._queue[0] is request:  # its application is running
            if request.head != b"" and not request.response_done:  # nothing of its answer written
                request.head = None
                request.response_done = True
                request.wake()
                self._finish(refusal)
            else:
                request.keep_alive = False  # its answer is under way; the connection ends with it
        else:
            if self._queue and self._queue[-1] is request:
                self._queue.pop()
            self._close_with(refusal)

    def _close_with(self, refusal: _Refusal) -> None:
        """Answer ``refusal`` after the requests already parsed, then close."""
        self._ignore_rest = True
        if self._queue:
            self._closing = refusal
        else:
            self._finish(refusal)

    def _finish(self, refusal: _Refusal | None) -> None:
        """Write ``refusal`` (if any) and what is pending, then close. The client may still be
        sending (a body the answer came before): closing with unread data would reset the
        connection and destroy the answer in the client's receive buffer, so the write side is shut
        and what arrives is read and dropped until the client closes or ``keep_alive_s`` passes."""
        transport = self.transport
        if self._lingering or transport is None or self.lost:
            return
        self._lingering = True
        self._ignore_rest = True
        if refusal is not None:
            self.write(refusal.response(self.server.clock.date_header()))
        self.flush()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self.read_paused or self._pipeline_paused:
            self.read_paused = self._pipeline_paused = False
            transport.resume_reading()
        self._set_timer_at(self.loop.time() + self.limits.keep_alive_s, transport.abort, "linger")

    def evict(self) -> None:
        """Make room at the connection cap: this connection waits on its client (idle, or mid
        request), and has waited longest."""
        self.server.connections.discard(self)
        self.server.waiting.pop(self, None)
        transport = self.transport
        if transport is None or self.lost:
            return
        request = self._parsing
        if self._lingering or not (self._in_head or request is not None):
            transport.abort()  # idle keep-alive, or lingering: nothing owed
            return
        self._ignore_rest = True
        if request is not None:
            request.response_done = True  # its application sees a disconnect
            request.wake()
        self._cancel_timer()
        self.write(self.server.busy_refusal().response(self.server.clock.date_header()))
        self.flush()
        transport.close()
        self._set_timer_at(self.loop.time() + self.limits.keep_alive_s, transport.abort, "linger")

    # ---------------------------------------------------------------- deadlines

    def _set_timer_at(self, when: float, callback: Callable[[], None], phase: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, callback)
        self._phase = phase

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = ""

    def _arm_idle_timer(self) -> None:
        if self.server.draining:
            self.close_if_idle()
            return
        self._set_timer_at(self.loop.time() + self.limits.keep_alive_s, self._idle_timed_out, "idle")

    def _idle_timed_out(self) -> None:
        self._timer, self._phase = None, ""
        if not self._queue and not self._in_head:
            self.close_if_idle()

    def _head_timed_out(self) -> None:
        self._timer, self._phase = None, ""
        if self._in_head:
            limit = self.limits.head_timeout_s
            self._refuse(
                _Refusal(408, f"the request head did not arrive within {limit:g} s", "request_timeout")
            )

    def _body_timed_out(self) -> None:
        self._timer, self._phase = None, ""
        request = self._parsing
        if request is None:
            return
        limit = self.limits.body_timeout_s
        if self.read_paused or self._pipeline_paused:  # the server stopped reading, not the client
            self._set_timer_at(self.loop.time() + limit, self._body_timed_out, "body")
            return
        self._fail_request(
            request, _Refusal(408, f"the request body did not arrive within {limit:g} s", "request_timeout")
        )

    def _request_timed_out(self, request: _Request) -> None:
        request.deadline = None
        if request.response_done or self.lost or self.transport is None:
            return
        message = f"the request did not complete within {self.limits.request_timeout_s:g} s"
        if not request.body_done:
            refusal = _Refusal(408, message, "request_timeout")
        else:
            refusal = _Refusal(504, message, "timeout", "server_error")
        if self._queue and self._queue[0] is request and request.head != b"":
            if self._parsing is request:
                self._parsing = None
            request.response_done = True  # its application sees a disconnect
            request.wake()
            request.head = None
            self._finish(refusal)
        else:
            self.transport.abort()  # an answer under way cannot be ended cleanly


class HttpServer:
    """Serve ``app`` on already bound sockets until :meth:`shutdown`."""

    def __init__(self, app: App, limits: ClientLimits | None = None, *, backlog: int = 4096) -> None:
        self.app = app
        # The router passes ClientLimits.from_settings(routes.router); others get the defaults.
        self.limits = limits or ClientLimits.from_settings(RouterSettings())
        self.backlog = backlog
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        # Connections waiting on their client (idle, or mid request), longest-waiting first.
        self.waiting: dict[_Connection, None] = {}
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
        _raise_open_file_limit(self.limits.max_connections)
        self._lifespan = _Lifespan(self.app)
        await self._lifespan.startup()
        for sock in sockets:
            server = await self.loop.create_server(
                lambda: _Connection(self), sock=sock, backlog=self.backlog, start_serving=True
            )
            self._servers.append(server)

    def evict_one(self) -> bool:
        """Close the connection that has waited longest on its client; False when none waits."""
        for conn in self.waiting:
            conn.evict()
            return True
        return False

    def busy_refusal(self) -> _Refusal:
        return _Refusal(
            503,
            f"the router is at its limit of {self.limits.max_connections} open connections; retry later",
            "server_busy",
            "server_error",
            retry_after=self.limits.retry_after_s,
        )

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


def _raise_open_file_limit(max_connections: int) -> None:
    """Each client connection is a descriptor, and so is its upstream connection: make room for
    both under the soft limit (up to the hard one), or say that the cap cannot be reached."""
    needed = 2 * max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        log.warning(
            "open-file limit %d is below the %d that max_connections %d needs; accepting may fail first",
            soft,
            needed,
            max_connections,
        )


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
