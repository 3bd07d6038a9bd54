"""Benchmark: thousands of concurrent streams straight at tritonserver, no router (issue 12).

The differential for ``benchmarks/router_load.py``: the same burst (``--concurrency`` streaming
requests at once, spread over the quickstart's two ``chat`` replicas, reference engine on CPU),
sent by clients that are not ours, so a failure here is Triton's and not the router's:

* ``http``: aiohttp to Triton's HTTP ``generate_stream`` of ``tiny-chat_tensorrt_llm`` (token ids
  in, ``output_ids`` out; one HTTP/1.1 connection per stream), aiohttp's own parser reading the
  chunked SSE answer;
* ``grpc``: ``ModelStreamInfer`` through the router's gRPC client (``generator/router/upstream.py``,
  grpcio's parser; a few HTTP/2 connections carry every stream).

Per run and protocol it counts the outcomes: ``ok`` (at least one token and a clean end), ``timeout``
(no byte for ``--stall`` seconds), ``malformed`` (the client's parser refused what came back, e.g.
"Bad status line: Expected HTTP/" when a connection receives another stream's events without a
status line), and other errors by type. It asserts nothing and exits 0 once the runs are done.

    .venv/bin/python benchmarks/triton_streams.py --concurrency 2048 --runs 5 --protocols http,grpc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.pipeline import build
from generator.router.config import Aggregated, Endpoint, ModelRoute
from generator.router.engine import engine_inputs
from generator.router.protocol import parse_request
from generator.router.tokens import ModelTokenizer, load_tokenizer
from generator.router.upstream import GenerateCall, GrpcUpstream, UpstreamError
from generator.runtime.launcher import Launcher, LaunchSettings
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

SPEC = ROOT / "examples" / "quickstart.yaml"
POOL = "chat"
ENGINE = "tiny-chat_tensorrt_llm"
PROMPT = "The quick brown fox jumps over the lazy dog"


async def encoded_prompts(tokenizer: ModelTokenizer, count: int, max_tokens: int) -> list[dict[str, Any]]:
    """One distinct prompt per stream, as the router's engine path would send it: the same
    tokenizing and the same engine inputs (``generator/router/engine.py``)."""
    route = ModelRoute(
        tokenizer_dir=str(SPEC.parent / "tokenizers" / "tiny-chat"),
        max_input_len=1024,
        max_output_len=max_tokens,
        serving=Aggregated(pool=POOL, triton_model=ENGINE, protocol="engine"),
    )
    prompts = []
    for i in range(count):
        body = {"model": "tiny-chat", "prompt": f"{PROMPT} {i}", "max_tokens": max_tokens, "stream": True}
        request = parse_request(json.dumps(body).encode(), chat=False)
        text, special = tokenizer.prompt_text(request.prompt, None)
        ids = await tokenizer.encode(text, special)
        prompts.append(engine_inputs(route, request, max_tokens, ids, tokenizer, stream=True))
    return prompts


async def over_http(session: aiohttp.ClientSession, endpoint: Endpoint, inputs: dict[str, Any]) -> str:
    url = f"http://{endpoint.host}:{endpoint.http}/v2/models/{ENGINE}/generate_stream"
    try:
        async with session.post(url, json=inputs) as reply:
            if reply.status != 200:
                return f"HTTP {reply.status}"
            tokens = 0
            async for line in reply.content:
                if line.startswith(b"data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        return "error event"
                    tokens += 1
            return "ok" if tokens else "no tokens"
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientResponseError as exc:
        return "malformed" if "Bad status line" in str(exc) or exc.status == 400 else f"HTTP {exc.status}"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def over_grpc(client: GrpcUpstream, endpoint: Endpoint, inputs: dict[str, Any], stall: float) -> str:
    tokens = 0
    try:
        responses = client.generate(endpoint, GenerateCall(ENGINE, inputs, "bench"))
        while True:
            async with asyncio.timeout(stall):
                response = await anext(responses, None)
            if response is None:
                return "ok" if tokens else "no tokens"
            tokens += 1
    except TimeoutError:
        return "timeout"
    except UpstreamError as exc:
        return type(exc).__name__


async def burst(
    protocol: str, endpoints: list[Endpoint], prompts: list[dict[str, Any]], stall: float
) -> Counter[str]:
    if protocol == "http":
        timeout = aiohttp.ClientTimeout(total=None, sock_read=stall, sock_connect=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            outcomes = await asyncio.gather(
                *(over_http(session, endpoints[i % len(endpoints)], p) for i, p in enumerate(prompts))
            )
    else:
        client = GrpcUpstream(30.0)
        try:
            outcomes = await asyncio.gather(
                *(over_grpc(client, endpoints[i % len(endpoints)], p, stall) for i, p in enumerate(prompts))
            )
        finally:
            await client.close()
    return Counter(outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", type=int, default=2048, help="streams at once per run (2048)")
    parser.add_argument("--runs", type=int, default=5, help="runs per protocol (5)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per stream (16)")
    parser.add_argument(
        "--stall", type=float, default=60.0, help="no byte for this long is a timeout, s (60)"
    )
    parser.add_argument("--protocols", default="http,grpc", help="comma-separated: http, grpc (both)")
    args = parser.parse_args(argv)
    protocols = [p for p in args.protocols.split(",") if p]
    if set(protocols) - {"http", "grpc"} or args.concurrency < 1 or args.runs < 1:
        parser.error("--protocols takes http and/or grpc; --concurrency and --runs at least 1")
    wanted = 2 * args.concurrency + 1024
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))  # Triton inherits it

    workdir = Path(tempfile.mkdtemp(prefix="triton-streams-"))
    out = workdir / "build"
    built = build(SPEC, out, reference_engine=True)
    write_output(built.files, out)
    launcher = Launcher(built.stack, out, find_tritonserver(), workdir / "logs", LaunchSettings())
    rows: list[tuple[str, int, Counter[str], float]] = []
    try:
        print("starting the quickstart's tritonservers (reference engine)...", flush=True)
        launcher.start()
        launcher.wait_ready()
        endpoints = [
            Endpoint(host="127.0.0.1", http=r.http_port, grpc=r.grpc_port, metrics=r.metrics_port)
            for r in launcher.replicas
            if r.pool == POOL
        ]
        tokenizer = ModelTokenizer(
            load_tokenizer(str(SPEC.parent / built.stack.model("tiny-chat").tokenizer_dir)), True
        )
        prompts = asyncio.run(encoded_prompts(tokenizer, args.concurrency, args.max_tokens))
        for protocol in protocols:
            for run in range(1, args.runs + 1):
                started = time.perf_counter()
                outcomes = asyncio.run(burst(protocol, endpoints, prompts, args.stall))
                wall = time.perf_counter() - started
                rows.append((protocol, run, outcomes, wall))
                print(f"  {protocol} run {run}: {dict(outcomes.most_common())}, {wall:.1f} s", flush=True)
    except KeyboardInterrupt:
        print("interrupted; stopping the tritonservers", file=sys.stderr)
        return 130
    finally:
        launcher.stop()
    print(
        f"\n{args.concurrency} streams at once over {len(endpoints)} tritonservers, {args.max_tokens} tokens each"
    )
    print(f"{'protocol':<9} {'run':>3} {'ok':>6} {'success':>8} {'wall s':>7}  other outcomes")
    for protocol, run, outcomes, wall in rows:
        ok = outcomes.get("ok", 0)
        rest = ", ".join(f"{k} {v}" for k, v in outcomes.most_common() if k != "ok") or "-"
        print(f"{protocol:<9} {run:>3} {ok:>6} {ok / args.concurrency:>8.1%} {wall:>7.1f}  {rest}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
