"""A lean HTTP/1.1 client for the router's one hot call: POST a JSON body to a Triton replica and
read the streamed body as it arrives.

Why not aiohttp here: at concurrency 1 the router's added latency is mostly the code it runs per
request, and it runs cold (other processes use the caches between requests). aiohttp builds a
request object, URL, header multidicts, timers and trace hooks for every call; this client writes
one prebuilt byte string on a pooled keep-alive connection and hands body chunks over as
``httptools`` (llhttp, the router server's parser too) reports them. ``benchmarks/router_overhead.py`` measures
the difference. The router still uses aiohttp for the cold calls (readiness, metrics, model config).

Scope, on purpose: one request at a time per connection, responses in ``Content-Length`` or chunked
framing, no redirects, TLS, proxies or cookies — Triton on a pod or loopback address needs none.
Backpressure: a connection stops reading from its socket while more than ``_HIGH_WATER`` bytes wait
for the consumer. Closing a response that has not ended aborts its connection, which is how Triton
learns that the request was abandoned.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

__all__ = ["Http1Client", "Http1Error", "Http1Response"]

_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18
_IDLE_PER_HOST = 256
_LATE_TURNS = 8  # event-loop turns a connect past its deadline may still finish in (see _connect)


class Http1Error(Exception):
    """The connection failed: refused, reset, closed early, or an unparsable response."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the parser state of the response currently on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.reusable = False
        self.closed = False
        self.received = False  # any byte of the current response
        self.error: Http1Error | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Http1Error("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(Http1Error(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            reason = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            self.error = self.error or Http1Error(reason)
        self._wake()

    # ---------------------------------------------------------------- httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.reusable = self.parser.should_keep_alive()
        self._wake()

    # ---------------------------------------------------------------- used by Http1Response

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status, self.headers_done, self.complete, self.reusable = 0, False, False, False
        self.received, self.error = False, None
        self.chunks.clear()
        self.buffered = 0

    def _fail(self, error: Http1Error) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < _LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk


class Http1Response:
    """A response whose body is read chunk by chunk; ``close()`` in a ``finally`` always."""

    def __init__(self, client: Http1Client, key: tuple[str, int], connection: _Connection) -> None:
        self._client, self._key, self._conn = client, key, connection
        self._released = False

    @property
    def status(self) -> int:
        return self._conn.status

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived; ``b""`` once the body has ended."""
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        parts, size = [], 0
        while chunk := await self.read_chunk():
            size += len(chunk)
            if size <= limit:
                parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Return the connection to the pool if the response ended cleanly, else abort it."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.reusable and not conn.closed and conn.error is None:
            self._client._put_back(self._key, conn)
        elif conn.transport is not None:
            conn.transport.abort()


class Http1Client:
    """Pools keep-alive connections per (host, port); the most recently used one goes out first."""

    def __init__(self, connect_timeout: float, max_connecting: int = 32) -> None:
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._heads: dict[tuple[str, int, str], bytes] = {}
        # New connections being opened at once per (host, port). A burst of thousands of streams
        # would otherwise open thousands of connections in the same instant and overflow the
        # server's listen backlog: the connects that time out would read as a dead replica.
        self._max_connecting = max_connecting
        self._connecting: dict[tuple[str, int], asyncio.Semaphore] = {}

    async def post(self, host: str, port: int, path: str, body: bytes) -> Http1Response:
        """Send ``body`` as JSON and return once the response headers are in.

        A pooled connection the server closed while it sat idle fails before any byte comes back;
        that request is sent once more on a new connection (the server never read it)."""
        key = (host, port)
        message = self._head(host, port, path) + b"%d\r\n\r\n" % len(body) + body
        conn, reused = await self._connection(key)
        try:
            return await self._exchange(key, conn, message)
        except Http1Error:
            if not reused or conn.received:
                raise
        conn, _ = await self._connection(key, fresh=True)
        return await self._exchange(key, conn, message)

    async def _exchange(self, key: tuple[str, int], conn: _Connection, message: bytes) -> Http1Response:
        conn.reset()
        assert conn.transport is not None
        conn.transport.write(message)
        response = Http1Response(self, key, conn)
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            response.close()
            raise
        return response

    def _head(self, host: str, port: int, path: str) -> bytes:
        head = self._heads.get((host, port, path))
        if head is None:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n"
                "Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: "
            ).encode()
            if len(self._heads) < 4096:  # paths come from routes.yaml; bounded all the same
                self._heads[(host, port, path)] = head
        return head

    async def _connection(self, key: tuple[str, int], fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection to ``key`` and whether it was reused from the pool."""
        idle = self._idle.get(key)
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn, True
        loop = asyncio.get_running_loop()
        gate = self._connecting.get(key)
        if gate is None:
            gate = self._connecting[key] = asyncio.Semaphore(self._max_connecting)
        try:
            async with gate:  # waiting for a turn is not part of the connect deadline
                conn = await self._connect(loop, key)
        except TimeoutError:
            raise Http1Error(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise Http1Error(f"cannot connect to {key[0]}:{key[1]}: {exc.strerror or exc}") from None
        return conn, False

    async def _connect(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> _Connection:
        """Open a connection within the connect deadline, as the kernel saw it.

        Under a burst (2,048 streams arriving at once) this event loop can fall seconds behind:
        the kernel completes the handshake in time, but the loop reaches the deadline's timer
        before the socket's completion (libuv runs due timers before it polls for I/O in each
        loop iteration: https://docs.libuv.org/en/v1.x/design.html#the-i-o-loop). A deadline
        that has passed therefore gives the loop a few turns to take in what already arrived
        before it calls the connect timed out: a replica is not failed for the router's own lag."""
        connecting = loop.create_task(loop.create_connection(lambda: _Connection(loop), key[0], key[1]))
        handed_out = False
        try:
            await asyncio.wait({connecting}, timeout=self._connect_timeout)
            for _ in range(_LATE_TURNS):
                if connecting.done():
                    break
                await asyncio.sleep(0)
            if not connecting.done():
                raise TimeoutError
            _, conn = connecting.result()
            handed_out = True
            return conn
        finally:
            if not connecting.done():
                connecting.cancel()
            elif not handed_out and not connecting.cancelled() and connecting.exception() is None:
                connecting.result()[0].close()  # connected after all, but this call was cancelled

    def _put_back(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < _IDLE_PER_HOST:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
