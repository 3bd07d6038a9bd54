"""The least a Python streaming reverse proxy can be on the router's own stack: the yardstick for
the router's own cost.

The router's HTTP server (``generator/router/server.py``) serving a bare ASGI app that forwards
each request body to one upstream with the router's HTTP/1.1 client (``generator/router/http1.py``)
and relays the response bytes as they come: the same event loop, parser and sockets as the router,
with none of its work (no parsing of the body, routing, length check, metrics, reshaping).
``benchmarks/router_overhead.py`` runs it beside the router, so "what any Python hop costs here" and
"what the router adds to that" are measured in one run.

    python benchmarks/minimal_python_proxy.py http://127.0.0.1:8000 18999
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.commands.router import bind_socket
from generator.router.http1 import Http1Client
from generator.router.server import HttpServer


def make_app(host: str, port: int) -> Any:
    client = Http1Client(connect_timeout=5.0)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            client.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reply = await client.post(host, port, scope["path"], body)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            while chunk := await reply.read_chunk():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            reply.close()

    return app


async def serve(upstream: str, port: int) -> None:
    target = urlsplit(upstream)
    server = HttpServer(make_app(target.hostname or "127.0.0.1", target.port or 80))
    await server.start([bind_socket("127.0.0.1", port)])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(1.0)


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], int(sys.argv[2])))
