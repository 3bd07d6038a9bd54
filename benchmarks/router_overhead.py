"""Benchmark: what the router costs in front of Triton, next to a plain nginx reverse proxy.

Bar (issue 3): router p50 TTFT overhead under 1 ms at concurrency 1, and at concurrency 64 at least
85 % of direct output tokens/s.

One run, one tritonserver (the quickstart's ``chat`` pool replica 0, reference engine at full CPU
speed), the same load at concurrency 1, 16 and 64 (streaming, ``--max-tokens`` each), through:

* ``direct``: Triton HTTP ``generate_stream`` of ``tiny-chat_bls``, the model the router calls;
* ``direct-grpc``: Triton gRPC ``ModelStreamInfer`` (the router's other upstream transport);
* ``nginx``: the same ``generate_stream`` through nginx (Debian package) as a plain reverse proxy;
* ``python-proxy``: the same through ``benchmarks/minimal_python_proxy.py`` (the router's stack with
  none of its work: its HTTP server and HTTP/1.1 client, nothing else), which separates what any Python hop costs here from what the router adds;
* ``router``: ``POST /v1/completions`` with ``stream: true`` through ``tritonstack router`` with
  its default HTTP ``generate_stream`` upstream, and ``router-grpc`` (gRPC stream upstream);
* ``router-uvicorn``: the same router application (HTTP upstream) served by uvicorn with httptools
  and uvloop instead of the router's own HTTP server, which prices that server's choices.

TTFT is request start → first SSE event carrying text; tokens/s is streamed text events / wall time.
The load generator (aiohttp) is the same for every path. ``--placement split`` puts Triton on CPU 0
and the client and proxies on the others (a node gives the router its own cores; on a 2-core machine
the shared default makes every hop wait for the CPU Triton is using). Figures from a shared machine are
for comparison within one run only.

    .venv/bin/python benchmarks/router_overhead.py [--max-tokens 32] [--requests 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.pipeline import build
from generator.render.options import RenderOptions
from generator.render.routes import local_routes
from generator.router.config import Endpoint
from generator.router.upstream import GenerateCall, GrpcUpstream, UpstreamError
from generator.runtime.launcher import Launcher, LaunchSettings
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

SPEC = ROOT / "examples" / "quickstart.yaml"
TRITON_MODEL = "tiny-chat_bls"  # what routes.yaml has the router call for tiny-chat: compare like with like
PROMPT = "The quick brown fox jumps over the lazy dog"

NGINX_CONF = """worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  upstream triton {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://triton;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""

Sample = tuple[float, int]  # (TTFT seconds, text events)
OneRequest = Callable[[], Awaitable[Sample]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sse_request(session: aiohttp.ClientSession, url: str, body: dict[str, Any], text_of) -> Sample:
    start = time.perf_counter()
    ttft, events = 0.0, 0
    async with session.post(url, json=body) as reply:
        if reply.status != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status}: {(await reply.text())[:200]}")
        async for line in reply.content:
            if not line.startswith(b"data: {"):
                continue
            if text_of(json.loads(line[6:])):
                events += 1
                if events == 1:
                    ttft = time.perf_counter() - start
    return ttft, events


def triton_text(event: dict[str, Any]) -> str:
    return event.get("text_output", "")


def openai_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or [{}]
    return choices[0].get("text", "")


class Errors:
    """Failed requests per path: counted and reported, so one upstream failure does not end the run."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def guard(self, name: str, one: OneRequest) -> Callable[[], Awaitable[Sample | None]]:
        async def guarded() -> Sample | None:
            try:
                return await one()
            except (TimeoutError, RuntimeError, aiohttp.ClientError, UpstreamError) as exc:
                if not self.count.get(name):
                    print(f"  {name}: {exc}", file=sys.stderr, flush=True)
                self.count[name] = self.count.get(name, 0) + 1
                return None

        return guarded


async def run_level(
    one: Callable[[], Awaitable[Sample | None]], concurrency: int, requests: int
) -> dict[str, float]:
    samples: list[Sample | None] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            samples.append(await one())

    await one()  # warm connections and caches
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _figures(samples, time.perf_counter() - start)


def _figures(samples: list[Sample | None], wall: float) -> dict[str, float]:
    done = [s for s in samples if s is not None]
    ttfts = sorted(s[0] for s in done) or [float("nan")]
    return {
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "tokens_per_s": sum(s[1] for s in done) / wall,
        "requests": len(samples),
        "errors": len(samples) - len(done),
    }


async def run_alternating(
    paths: dict[str, Callable[[], Awaitable[Sample | None]]], requests: int
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[Sample | None]] = {name: [] for name in paths}
    walls = dict.fromkeys(paths, 0.0)
    for one in paths.values():
        await one()  # warm up
    for _ in range(requests):
        for name, one in paths.items():
            start = time.perf_counter()
            samples[name].append(await one())
            walls[name] += time.perf_counter() - start
    return {name: _figures(samples[name], walls[name]) for name in paths}


async def measure(
    paths: dict[str, Callable[[aiohttp.ClientSession, GrpcUpstream], OneRequest]],
    levels: list[int],
    requests: int,
) -> dict[str, dict[int, dict[str, float]]]:
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in paths}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:
        grpc_client = GrpcUpstream(5.0)
        errors = Errors()
        try:
            for concurrency in levels:
                count = max(requests, 4 * concurrency) if concurrency > 1 else requests
                if concurrency == 1:  # request by request across paths: machine noise hits every path alike
                    figures = await run_alternating(
                        {n: errors.guard(n, make(session, grpc_client)) for n, make in paths.items()}, count
                    )
                    for name in paths:
                        results[name][1] = figures[name]
                        print(f"  c=1   {name:<14} {figures[name]}", flush=True)
                    continue
                for name, make in paths.items():  # one path after the other within a level
                    results[name][concurrency] = await run_level(
                        errors.guard(name, make(session, grpc_client)), concurrency, count
                    )
                    print(f"  c={concurrency:<3} {name:<14} {results[name][concurrency]}", flush=True)
        finally:
            await grpc_client.close()
    return results


def pin_process_trees(parent: int, cpus: set[int]) -> None:
    """Move every thread of every descendant of ``parent`` onto ``cpus``."""
    import psutil

    for child in psutil.Process(parent).children(recursive=True):
        for thread in child.threads():
            try:
                os.sched_setaffinity(thread.id, cpus)
            except OSError:  # the thread ended meanwhile
                pass


def router_config(routes: Path, upstream: str) -> Path:
    """A copy of ``routes`` with another upstream, written beside it: the tokenizer paths in it are
    relative to its directory."""
    text = re.sub(r"(?m)^  upstream: \w+$", f"  upstream: {upstream}", routes.read_text())
    text = text.replace("max_inflight_per_replica: 64", "max_inflight_per_replica: 256")
    config = routes.with_name(f"routes-{upstream}.yaml")
    config.write_text(text)
    return config


# The router application under uvicorn: what `tritonstack router` builds, served by another server.
UVICORN_ROUTER = """
import sys
import uvicorn
from generator.router.app import RouterApp
from generator.router.command import make_upstream
from pathlib import Path
from generator.router.config import load_routes
routes = load_routes(Path(sys.argv[1]))
uvicorn.run(RouterApp(routes, make_upstream(routes)), host="127.0.0.1", port=int(sys.argv[2]),
            http="httptools", loop="auto", lifespan="on", log_level="warning", access_log=False)
"""


def start_uvicorn_router(routes: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", UVICORN_ROUTER, str(router_config(routes, "http")), str(port)],
        cwd=ROOT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as reply:
                if reply.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("the router under uvicorn did not start")


def start_router(routes: Path, upstream: str) -> tuple[subprocess.Popen[str], str]:
    config = router_config(routes, upstream)
    process = subprocess.Popen(
        [sys.executable, "-m", "generator.router.command", "--config", str(config), "--port", "0"],
        cwd=ROOT,  # the checkout this script is in, wherever it was started from
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("tritonstack router: "):
        os.killpg(process.pid, signal.SIGKILL)
        raise RuntimeError("router did not start")
    return process, line.split()[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--requests", type=int, default=64, help="requests per level (at least 4 × concurrency)"
    )
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--placement",
        choices=["shared", "split"],
        default="shared",
        help="shared: every process on every CPU (the default); split: tritonserver and its stubs on "
        "CPU 0, the client and every proxy (nginx, Python, routers) on the other CPUs, as a node "
        "gives the router its own cores",
    )
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if args.placement == "split" and len(cpus) < 2:
        print("--placement split needs at least 2 CPUs", file=sys.stderr)
        return 1
    levels = [int(x) for x in args.levels.split(",")]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        print("nginx not found: apt-get install -y nginx", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="router-overhead-"))
    out = workdir / "build"
    built = build(SPEC, out, reference_engine=True)
    write_output(built.files, out)
    launcher = Launcher(built.stack, out, find_tritonserver(), workdir / "logs", LaunchSettings())
    children: list[subprocess.Popen[Any]] = []
    try:
        launcher.start()
        launcher.wait_ready()
        if args.placement == "split":
            pin_process_trees(os.getpid(), {cpus[0]})  # Triton: everything started so far
            os.sched_setaffinity(0, set(cpus[1:]))  # this client, and what it starts from here on
        replica = next(r for r in launcher.replicas if r.pool == "chat")
        endpoint = Endpoint(
            host="127.0.0.1", http=replica.http_port, grpc=replica.grpc_port, metrics=replica.metrics_port
        )
        endpoints = launcher.endpoints()
        endpoints["chat"] = [endpoints["chat"][0]]  # every path talks to the same single server
        routes = out / "router" / "routes.yaml"
        routes.parent.mkdir(parents=True, exist_ok=True)
        routes.write_bytes(local_routes(built.stack, endpoints, RenderOptions(SPEC.parent, out)))

        nginx_port = free_port()
        (workdir / "nginx").mkdir()
        conf = workdir / "nginx" / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=workdir / "nginx", upstream=endpoint.http, port=nginx_port))
        children.append(
            subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir / "nginx")], start_new_session=True)
        )
        proxy_port = free_port()
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "minimal_python_proxy.py"),
                    f"http://127.0.0.1:{endpoint.http}",
                    str(proxy_port),
                ],
                start_new_session=True,
            )
        )
        router_http, http_url = start_router(routes, "http")
        children.append(router_http)
        router_grpc, grpc_url = start_router(routes, "grpc")
        children.append(router_grpc)
        router_uvicorn, uvicorn_url = start_uvicorn_router(routes)
        children.append(router_uvicorn)
        time.sleep(1.0)  # nginx and the routers' first readiness poll

        triton_body = {"text_input": PROMPT, "max_tokens": args.max_tokens, "stream": True}
        openai_body = {"model": "tiny-chat", "prompt": PROMPT, "max_tokens": args.max_tokens, "stream": True}
        direct_url = f"http://127.0.0.1:{endpoint.http}/v2/models/{TRITON_MODEL}/generate_stream"
        nginx_url = f"http://127.0.0.1:{nginx_port}/v2/models/{TRITON_MODEL}/generate_stream"
        proxy_url = f"http://127.0.0.1:{proxy_port}/v2/models/{TRITON_MODEL}/generate_stream"

        async def grpc_one(client: GrpcUpstream) -> Sample:
            start, ttft, events = time.perf_counter(), 0.0, 0
            call = GenerateCall(TRITON_MODEL, dict(triton_body), "bench")
            async for response in client.generate(endpoint, call):
                if response.text:
                    events += 1
                    if events == 1:
                        ttft = time.perf_counter() - start
            return ttft, events

        paths: dict[str, Callable[[aiohttp.ClientSession, GrpcUpstream], OneRequest]] = {
            "direct": lambda s, g: lambda: sse_request(s, direct_url, triton_body, triton_text),
            "direct-grpc": lambda s, g: lambda: grpc_one(g),
            "nginx": lambda s, g: lambda: sse_request(s, nginx_url, triton_body, triton_text),
            "python-proxy": lambda s, g: lambda: sse_request(s, proxy_url, triton_body, triton_text),
            "router": lambda s, g: (
                lambda: sse_request(s, http_url + "/v1/completions", openai_body, openai_text)
            ),
            "router-grpc": lambda s, g: (
                lambda: sse_request(s, grpc_url + "/v1/completions", openai_body, openai_text)
            ),
            "router-uvicorn": lambda s, g: (
                lambda: sse_request(s, uvicorn_url + "/v1/completions", openai_body, openai_text)
            ),
        }
        results = asyncio.run(measure(paths, levels, args.requests))
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
        launcher.stop()

    print(
        f"\nstreaming, max_tokens={args.max_tokens}, one tritonserver (reference engine), "
        f"placement {args.placement}"
    )
    print(
        f"{'path':<14} {'c':>3} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'tok/s':>9} {'p50 Δ ms':>9} "
        f"{'tok/s ratio':>11} {'errors':>6}"
    )
    for name, by_level in results.items():
        for concurrency, figures in by_level.items():
            base = results["direct"][concurrency]
            delta = figures["ttft_p50_ms"] - base["ttft_p50_ms"]
            ratio = figures["tokens_per_s"] / base["tokens_per_s"]
            print(
                f"{name:<14} {concurrency:>3} {figures['ttft_p50_ms']:>12.2f} {figures['ttft_p99_ms']:>12.2f} "
                f"{figures['tokens_per_s']:>9.0f} {delta:>+9.2f} {ratio:>11.2f} {figures['errors']:>6}"
            )
    c1, c64 = results["router"].get(1), results["router"].get(64)
    verdict = []
    if c1:
        verdict.append(
            f"c=1 p50 TTFT overhead {c1['ttft_p50_ms'] - results['direct'][1]['ttft_p50_ms']:+.2f} ms (bar < 1 ms), "
            f"of which a bare Python hop costs {results['python-proxy'][1]['ttft_p50_ms'] - results['direct'][1]['ttft_p50_ms']:+.2f} ms"
        )
    if c64:
        verdict.append(
            f"c=64 throughput {c64['tokens_per_s'] / results['direct'][64]['tokens_per_s']:.0%} of direct (bar ≥ 85 %)"
        )
    failed = {name: sum(f["errors"] for f in by_level.values()) for name, by_level in results.items()}
    if any(failed.values()):
        verdict.append("failed requests: " + ", ".join(f"{n} {k}" for n, k in failed.items() if k))
    print("; ".join(verdict))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"max_tokens": args.max_tokens, "placement": args.placement, "results": results}, indent=2
            )
        )
    if any(failed.values()):  # keep the tritonserver logs for a look
        print(f"logs kept in {workdir / 'logs'}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
