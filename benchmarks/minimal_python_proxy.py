"""The least a Python streaming reverse proxy can be: the yardstick for the router's own cost.

uvicorn (uvloop, httptools) serving a bare ASGI app that forwards each request body to one upstream
with aiohttp and relays the response bytes as they come — the same stack as the router, with none
of its work (no parsing, routing, tokenizing, metrics). ``benchmarks/router_overhead.py`` runs it
beside the router, so "what any Python hop costs here" and "what the router adds to that" are
measured in one run.

    python benchmarks/minimal_python_proxy.py http://127.0.0.1:8000 18999
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn


def make_app(upstream: str) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert session is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {"content-type": "application/json"}
        async with session.post(upstream + scope["path"], data=body, headers=headers) as reply:
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": [(b"content-type", b"text/event-stream")]}
            )
            async for chunk in reply.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


if __name__ == "__main__":
    upstream_url, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        make_app(upstream_url), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )
