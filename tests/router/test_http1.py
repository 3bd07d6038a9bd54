"""The router's HTTP/1.1 client (generator/router/http1.py) against scripted servers on loopback:
framing, connection reuse, a stale pooled connection, failures mid-body, back-pressure, abandon."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import pytest

from generator.router.http1 import Http1Client, Http1Error

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


class Server:
    """A loopback server whose connections run ``handler``; counts the connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()

    async def __aenter__(self) -> Self:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()
                self.closed.set()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


async def keep_alive_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            _, body = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(b"data: ", body))
        await writer.drain()


async def read_body(client: Http1Client, port: int, body: bytes = b"{}") -> tuple[int, bytes]:
    reply = await client.post("127.0.0.1", port, "/v2/models/m/generate_stream", body)
    try:
        return reply.status, await reply.read_all()
    finally:
        reply.close()


def test_chunked_body_and_one_connection_for_sequential_requests() -> None:
    async def scenario() -> None:
        async with Server(keep_alive_echo) as server:
            client = Http1Client(connect_timeout=2.0)
            for i in range(3):
                assert await read_body(client, server.port, b'{"i":%d}' % i) == (200, b'data: {"i":%d}' % i)
            assert server.connections == 1
            client.close()

    asyncio.run(scenario())


def test_request_head_names_path_host_and_length() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        seen.extend([head, body])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async def scenario() -> None:
        async with Server(handler) as server:
            client = Http1Client(connect_timeout=2.0)
            assert await read_body(client, server.port, b'{"a":1}') == (200, b"ok")
            client.close()
            head = seen[0].decode()
            assert head.startswith("POST /v2/models/m/generate_stream HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Content-Length: 7\r\n" in head
            assert seen[1] == b'{"a":1}'

    asyncio.run(scenario())


def test_connection_closed_while_idle_is_replaced_transparently() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async def scenario() -> None:
        async with Server(one_then_close) as server:
            client = Http1Client(connect_timeout=2.0)
            assert await read_body(client, server.port) == (200, b"ok")
            await server.closed.wait()
            await asyncio.sleep(0.05)  # let the close reach the pooled connection, or not: both work
            assert await read_body(client, server.port) == (200, b"ok")
            assert server.connections == 2
            client.close()

    asyncio.run(scenario())


def test_reset_mid_body_is_an_error_not_an_end() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.transport.abort()

    async def scenario() -> None:
        async with Server(cut) as server:
            client = Http1Client(connect_timeout=2.0)
            reply = await client.post("127.0.0.1", server.port, "/x", b"{}")
            assert await reply.read_chunk() == b"hello"
            with pytest.raises(Http1Error):
                await reply.read_chunk()
            reply.close()
            client.close()

    asyncio.run(scenario())


def test_refused_connection_and_garbage_are_errors_with_a_reason() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        client = Http1Client(connect_timeout=2.0)
        async with Server(garbage) as server:
            port = server.port
            with pytest.raises(Http1Error, match="malformed HTTP response"):
                await client.post("127.0.0.1", port, "/x", b"{}")
        with pytest.raises(Http1Error, match=f"cannot connect to 127.0.0.1:{port}"):
            await client.post("127.0.0.1", port, "/x", b"{}")
        client.close()

    asyncio.run(scenario())


def test_closing_an_unfinished_response_aborts_the_connection() -> None:
    """How the router abandons a request: the server sees its connection end."""
    finished = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"3\r\nabc\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except (ConnectionError, OSError):
            finished.set()

    async def scenario() -> None:
        async with Server(endless) as server:
            client = Http1Client(connect_timeout=2.0)
            reply = await client.post("127.0.0.1", server.port, "/x", b"{}")
            assert await reply.read_chunk()
            reply.close()
            await asyncio.wait_for(finished.wait(), 5)
            client.close()

    asyncio.run(scenario())


def test_a_slow_reader_pauses_the_socket_and_loses_nothing() -> None:
    piece = b"x" * 65536
    count = 64  # 4 MiB: well past the client's high-water mark

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(count):
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        async with Server(flood) as server:
            client = Http1Client(connect_timeout=2.0)
            reply = await client.post("127.0.0.1", server.port, "/x", b"{}")
            await asyncio.sleep(0.3)  # the server writes while nobody reads
            assert reply._conn.paused and reply._conn.buffered < count * len(piece)
            received = 0
            while chunk := await reply.read_chunk():
                received += len(chunk)
            assert received == count * len(piece)
            reply.close()
            client.close()

    asyncio.run(scenario())


def test_a_burst_opens_at_most_max_connecting_connections_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """2048 streams arriving together must not open 2048 connections in the same instant: the
    server's listen backlog overflows and the connects that time out read as a dead replica."""
    opening = {"now": 0, "most": 0}
    original = asyncio.BaseEventLoop.create_connection

    async def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        opening["now"] += 1
        opening["most"] = max(opening["most"], opening["now"])
        try:
            await asyncio.sleep(0.01)
            return await original(self, *args, **kwargs)
        finally:
            opening["now"] -= 1

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", counted)

    async def scenario() -> list[int]:
        async with Server(keep_alive_echo) as server:
            client = Http1Client(connect_timeout=5.0, max_connecting=4)
            try:
                replies = await asyncio.gather(*(read_body(client, server.port) for _ in range(40)))
            finally:
                client.close()
            return [status for status, _ in replies]

    assert asyncio.run(scenario()) == [200] * 40
    assert 1 < opening["most"] <= 4


def test_a_connect_the_kernel_completed_in_time_is_not_failed_for_the_loops_own_lag() -> None:
    """A burst stalls the router's loop for longer than the connect deadline while the handshake
    completes outside it; when the loop wakes, the completion and the deadline's timer are due
    together. The connection is used, not reported as a connect timeout (which counts against
    the replica: in benchmarks/router_load.py at c = 2048 both replicas failed this way at once)."""

    async def scenario() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        original = loop.create_connection

        async def completion_arrives_during_the_stall(*args: Any, **kwargs: Any) -> Any:
            connected = await original(*args, **kwargs)
            noticed = loop.create_future()  # the handshake's completion, as the kernel reports it
            threading.Timer(0.02, loop.call_soon_threadsafe, (noticed.set_result, None)).start()
            await noticed
            return connected

        loop.create_connection = completion_arrives_during_the_stall  # type: ignore[method-assign]
        async with Server(keep_alive_echo) as server:
            client = Http1Client(connect_timeout=0.05)
            loop.call_later(0.01, time.sleep, 0.3)  # the loop falls behind: a burst being parsed
            try:
                return await read_body(client, server.port)
            finally:
                client.close()

    assert asyncio.run(scenario()) == (200, b"data: {}")


def test_a_connect_that_never_completes_still_times_out() -> None:
    async def scenario() -> tuple[str, float]:
        loop = asyncio.get_running_loop()

        async def never(*args: object, **kwargs: object) -> object:  # a handshake nobody answers
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        loop.create_connection = never  # type: ignore[method-assign]
        client = Http1Client(connect_timeout=0.1)
        started = time.monotonic()
        try:
            with pytest.raises(Http1Error) as error:
                await read_body(client, 9)
            return str(error.value), time.monotonic() - started
        finally:
            client.close()

    message, waited = asyncio.run(scenario())
    assert message == "connecting to 127.0.0.1:9 timed out" and 0.1 <= waited < 1.0
