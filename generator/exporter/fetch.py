"""One Triton ``/metrics`` page, within a total deadline and a size cap.

A target is untrusted input to the exporter: it may drip its answer a byte at a time or answer
hundreds of megabytes (issue 12). httpx bounds each socket read, not the request, so a drip that
beats the read timeout never ends and pins a worker; and ``.text`` holds the whole answer. Here the
stdlib HTTP/1.1 client runs over a socket whose every read and write gets what is left of the
deadline as its timeout, status line and headers included, so a fetch ends by its deadline whatever
the target does. The body is read in chunks and refused as soon as it passes ``max_bytes``: a target
never costs more memory than the cap.

Not bounded by the deadline: resolving a host name (``getaddrinfo`` takes no timeout). Targets are
addresses (static replicas) or were resolved before the scrape (DNS pools), so none is resolved here
in practice.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from generator.errors import TritonstackError

__all__ = ["TargetFetchError", "fetch_metrics", "metrics_fetcher"]

READ_CHUNK_BYTES = 64 * 1024
Clock = Callable[[], float]


class TargetFetchError(TritonstackError):
    """A Triton /metrics endpoint did not answer 200 with a small enough page in time."""


def metrics_fetcher(max_bytes: int, clock: Clock = time.monotonic) -> Callable[[str, float], str]:
    """The collector's ``fetch``: (url, seconds) → page text, capped at ``max_bytes``."""

    def fetch(url: str, timeout: float) -> str:
        return fetch_metrics(url, timeout, max_bytes=max_bytes, clock=clock)

    return fetch


def fetch_metrics(url: str, timeout: float, *, max_bytes: int, clock: Clock = time.monotonic) -> str:
    """GET ``url`` and return its body; raises :class:`TargetFetchError` within ``timeout`` seconds."""
    deadline = clock() + timeout
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise TargetFetchError(f"{url}: no connection within {timeout:.2g} s") from None
    except OSError as exc:
        raise TargetFetchError(f"{url}: cannot connect: {exc.strerror or exc}") from None
    connection = http.client.HTTPConnection(host, port)
    connection.sock = _DeadlineSocket(raw, deadline, clock)  # type: ignore[assignment]
    try:
        connection.request("GET", target, headers={"Accept-Encoding": "identity", "Connection": "close"})
        response = connection.getresponse()
        if response.status != 200:
            raise TargetFetchError(f"{url}: HTTP {response.status}")
        if response.length is not None and response.length > max_bytes:
            announced = f"answer of {response.length} bytes"
            raise TargetFetchError(f"{url}: {announced} is larger than max_target_bytes ({_size(max_bytes)})")
        # Chunks, joined once at the end: no buffer doubling as it grows, and a refused answer never
        # was one large allocation. One byte past the cap is enough to know it is too large.
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(min(READ_CHUNK_BYTES, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise TargetFetchError(f"{url}: answer larger than max_target_bytes ({_size(max_bytes)})")
        return b"".join(chunks).decode("utf-8", errors="replace")
    except (_DeadlinePassed, TimeoutError):
        raise TargetFetchError(f"{url}: no complete answer within {timeout:.2g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise TargetFetchError(f"{url}: {exc.__class__.__name__}: {exc}") from None
    finally:
        raw.close()


class _DeadlinePassed(Exception):
    pass


class _DeadlineSocket:
    """The part of a socket http.client uses, with every read and write bounded by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float, clock: Clock) -> None:
        self._sock = sock
        self._deadline = deadline
        self._clock = clock

    def _arm(self) -> None:
        left = self._deadline - self._clock()
        if left <= 0:
            raise _DeadlinePassed
        self._sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer: memoryview) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self), buffer_size=READ_CHUNK_BYTES)

    def close(self) -> None:
        # http.client closes the connection's socket while the response still reads from it (a real
        # socket defers that until its file closes); fetch_metrics closes the real socket at the end.
        pass


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._sock.recv_into(buffer)


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count % (1 << 20) == 0 else f"{count} bytes"
