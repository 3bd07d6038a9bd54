"""Benchmark: what the router costs in front of Triton, per data path, and what each path costs.

Bars. Issue 3: router p50 TTFT overhead under 1 ms at concurrency 1, and at concurrency 64 at least
85 % of direct output tokens/s. Issue 14 (engine-direct): ``router-engine`` ≥ 1.0× the tokens/s of
``bls-direct`` at c = 64; its TTFT overhead ≤ 0.25 ms at c = 1 against ``engine-direct``; the
router's CPU per streamed token, and the tokens/s one router core can carry at that cost.

One run, one tritonserver (the quickstart's ``chat`` pool replica 0, reference engine at full CPU
speed), the same load at each concurrency (streaming, ``--max-tokens`` each), through (``--paths``;
the default is the issue-14 set, the first four):

* ``bls-direct``: clients calling Triton HTTP ``generate_stream`` of ``tiny-chat_bls`` (text in,
  text out; the Python BLS tokenizes through preprocessing and detokenizes every token through
  postprocessing): today's way to get text from Triton;
* ``engine-direct``: clients calling ``tiny-chat_tensorrt_llm`` with token ids (``input_ids``
  tokenized once by the client, ``output_ids`` counted, never decoded): Triton with no Python model
  on the path, what a client that tokenizes itself gets;
* ``router-bls``: ``POST /v1/completions`` (``stream: true``) through ``tritonstack router`` with
  ``router.data_path: bls`` (it calls ``tiny-chat_bls``);
* ``router-engine``: the same through the router's default engine-direct routes (it tokenizes,
  calls ``tiny-chat_tensorrt_llm`` with ids, detokenizes with ``tokenizers``' DecodeStream);
* ``bls-direct-grpc``: ``bls-direct`` over Triton gRPC ``ModelStreamInfer``;
* ``nginx``: ``bls-direct`` through nginx (Debian package) as a plain reverse proxy;
* ``python-proxy``: ``bls-direct`` through ``benchmarks/minimal_python_proxy.py`` (the router's stack
  with none of its work: its HTTP server and HTTP/1.1 client), what any Python hop costs here;
* ``engine-python-proxy`` and ``engine-nginx``: ``engine-direct`` through the same two proxies: the
  least any hop costs in front of the engine, the yardstick for ``router-engine``'s c = 1 overhead
  (the verdict splits that overhead into the bare Python hop and the router's own work);
* ``router-bls-grpc``: ``router-bls`` with the gRPC upstream; ``router-uvicorn``: the
  ``router-engine`` application served by uvicorn with httptools instead of the router's server.

TTFT is request start → first SSE event carrying text (or ids); tokens/s is streamed tokens / wall
time (a text event counts one: every path here streams one token per event). CPU per token is the
user + system CPU time of each process tree (psutil: the tritonserver with its Python stubs, the
router or proxy, this client) during one path's level, divided by the tokens it streamed; the router's
"tok/s per core" is 1 / its CPU per token. The load generator (aiohttp) is the same for every path.
``--placement split`` puts Triton on CPU 0 and the client and proxies on the others. Figures from a
shared machine are for comparison within one run only.

    .venv/bin/python benchmarks/router_overhead.py [--max-tokens 32] [--requests 64] \
        [--levels 1,16,64,256] [--paths bls-direct,engine-direct,router-bls,router-engine] [--json out.json]
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
from generator.router.tokens import ModelTokenizer, load_tokenizer
from generator.router.upstream import GenerateCall, GrpcUpstream, UpstreamError
from generator.runtime.launcher import Launcher, LaunchSettings
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

SPEC = ROOT / "examples" / "quickstart.yaml"
TRITON_MODEL = "tiny-chat_bls"  # what router-bls calls for tiny-chat: compare like with like
ENGINE_MODEL = "tiny-chat_tensorrt_llm"  # what router-engine calls
ISSUE_14_PATHS = ("bls-direct", "engine-direct", "router-bls", "router-engine")
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

Sample = tuple[float, int]  # (TTFT seconds, streamed tokens)
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
            found = text_of(json.loads(line[6:]))
            if found:
                events += found if isinstance(found, int) else 1
                if not ttft:
                    ttft = time.perf_counter() - start
    return ttft, events


def triton_text(event: dict[str, Any]) -> str:
    return event.get("text_output", "")


def engine_tokens(event: dict[str, Any]) -> int:
    """Tokens in one engine response: ``output_ids`` is a number for one token, else a list."""
    ids = event.get("output_ids")
    if ids is None:
        return 0
    return 1 if isinstance(ids, int) else len(ids)


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


class CpuMeter:
    """User + system CPU seconds of named process trees (a process and its descendants) between
    two readings; a descendant that ended in between is missed (none does here)."""

    def __init__(self, roots: dict[str, int], own_only: frozenset[str] = frozenset()) -> None:
        self.roots, self.own_only = roots, own_only

    def read(self) -> dict[str, float]:
        import psutil

        totals = {}
        for name, pid in self.roots.items():
            root = psutil.Process(pid)
            tree = [root] if name in self.own_only else [root, *root.children(recursive=True)]
            seconds = 0.0
            for process in tree:
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                seconds += times.user + times.system
            totals[name] = seconds
        return totals


def cpu_per_token(before: dict[str, float], after: dict[str, float], tokens: float) -> dict[str, float]:
    """Microseconds of CPU per streamed token, per process tree."""
    return {name: 1e6 * (after[name] - before[name]) / max(tokens, 1) for name in before}


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


def _figures(samples: list[Sample | None], wall: float) -> dict[str, Any]:
    done = [s for s in samples if s is not None]
    ttfts = sorted(s[0] for s in done) or [float("nan")]
    return {
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "tokens_per_s": sum(s[1] for s in done) / wall,
        "tokens": sum(s[1] for s in done),
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
    meter: CpuMeter,
    hop: dict[str, str],
    profiler: Callable[[str, int], Callable[[], None] | None] | None = None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Figures per path and level. ``hop``: path → the process tree between client and Triton (its
    CPU per token is reported as ``hop``), absent for the direct paths."""
    results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in paths}
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
                    for name in paths:  # CPU is not split per path when they alternate
                        results[name][1] = figures[name]
                        print(f"  c=1   {name:<19} {_brief(figures[name])}", flush=True)
                    continue
                for name, make in paths.items():  # one path after the other within a level
                    stop_profile = profiler(name, concurrency) if profiler else None
                    before = meter.read()
                    figures = await run_level(
                        errors.guard(name, make(session, grpc_client)), concurrency, count
                    )
                    cpu = cpu_per_token(before, meter.read(), figures["tokens"])
                    if stop_profile is not None:
                        stop_profile()
                    figures["cpu_us_per_token"] = {
                        "triton": cpu["triton"],
                        "hop": cpu[hop[name]] if name in hop else 0.0,
                        "client": cpu["client"],
                    }
                    results[name][concurrency] = figures
                    print(f"  c={concurrency:<3} {name:<19} {_brief(figures)}", flush=True)
        finally:
            await grpc_client.close()
    return results


def _brief(figures: dict[str, Any]) -> str:
    text = (
        f"TTFT p50 {figures['ttft_p50_ms']:.2f} ms p99 {figures['ttft_p99_ms']:.2f} ms, "
        f"{figures['tokens_per_s']:.0f} tok/s, {figures['errors']} errors"
    )
    cpu = figures.get("cpu_us_per_token")
    if cpu:
        text += ", CPU µs/token " + " ".join(f"{k} {v:.0f}" for k, v in cpu.items())
    return text


def pin_process_trees(parent: int, cpus: set[int]) -> None:
    """Move every thread of every descendant of ``parent`` onto ``cpus``."""
    import psutil

    for child in psutil.Process(parent).children(recursive=True):
        for thread in child.threads():
            try:
                os.sched_setaffinity(thread.id, cpus)
            except OSError:  # the thread ended meanwhile
                pass


def router_config(routes: Path, upstream: str, label: str = "") -> Path:
    """A copy of ``routes`` with another upstream (``http`` or ``grpc``), written beside it under
    ``label`` (default: the upstream): the tokenizer paths in it are relative to its directory.
    Admission is widened so that c = 256 is not queued in the router."""
    text = re.sub(r"(?m)^  upstream: \w+$", f"  upstream: {upstream}", routes.read_text())
    text = text.replace("max_inflight_per_replica: 64", "max_inflight_per_replica: 512")
    text = text.replace("max_queue: 256", "max_queue: 1024")
    config = routes.with_name(f"{routes.stem}-{label or upstream}.yaml")
    config.write_text(text)
    return config


# The router application under uvicorn: what `tritonstack router` builds, served by another server.
UVICORN_ROUTER = """
import sys
import uvicorn
from generator.router.app import RouterApp
from generator.commands.router import make_upstream
from pathlib import Path
from generator.router.config import load_routes
routes = load_routes(Path(sys.argv[1]))
uvicorn.run(RouterApp(routes, make_upstream(routes)), host="127.0.0.1", port=int(sys.argv[2]),
            http="httptools", loop="auto", lifespan="on", log_level="warning", access_log=False)
"""


def start_uvicorn_router(routes: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", UVICORN_ROUTER, str(router_config(routes, "http", "uvicorn")), str(port)],
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
        [sys.executable, "-m", "generator.cli", "router", "--config", str(config), "--port", "0"],
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


ALL_PATHS = (
    *ISSUE_14_PATHS,
    "bls-direct-grpc",
    "nginx",
    "python-proxy",
    "engine-nginx",
    "engine-python-proxy",
    "router-bls-grpc",
    "router-uvicorn",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--requests", type=int, default=64, help="requests per level (at least 4 × concurrency)"
    )
    parser.add_argument("--levels", default="1,16,64,256")
    parser.add_argument(
        "--paths", default=",".join(ISSUE_14_PATHS), help=f"comma-separated, of: {', '.join(ALL_PATHS)}"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the router-engine process with py-spy (pip install py-spy) during its highest "
        "level and write the flame graph here (SVG)",
    )
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
    chosen = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(chosen) - set(ALL_PATHS))
    if unknown:
        print(f"unknown paths {unknown}; choose from {', '.join(ALL_PATHS)}", file=sys.stderr)
        return 1
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if "nginx" in chosen and not Path(nginx).exists():
        print("nginx not found: apt-get install -y nginx", file=sys.stderr)
        return 1
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if args.profile and not Path(py_spy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
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
        assert replica.process is not None
        endpoint = Endpoint(
            host="127.0.0.1", http=replica.http_port, grpc=replica.grpc_port, metrics=replica.metrics_port
        )
        endpoints = launcher.endpoints()
        endpoints["chat"] = [endpoints["chat"][0]]  # every path talks to the same single server
        routes_dir = out / "router"
        routes_dir.mkdir(parents=True, exist_ok=True)
        routes: dict[str, Path] = {}
        for data_path in ("engine", "bls"):
            stack = built.stack.model_copy(
                update={"router": built.stack.router.model_copy(update={"data_path": data_path})}
            )
            routes[data_path] = routes_dir / f"routes-{data_path}.yaml"
            routes[data_path].write_bytes(local_routes(stack, endpoints, RenderOptions(SPEC.parent, out)))

        urls: dict[str, str] = {}
        roots = {"triton": replica.process.pid, "client": os.getpid()}
        hop: dict[str, str] = {}

        def started(path: str, process: subprocess.Popen[Any], url: str) -> None:
            children.append(process)
            urls[path], roots[path], hop[path] = url, process.pid, path

        if {"nginx", "engine-nginx"} & set(chosen):
            nginx_port = free_port()
            (workdir / "nginx").mkdir()
            conf = workdir / "nginx" / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(prefix=workdir / "nginx", upstream=endpoint.http, port=nginx_port)
            )
            process = subprocess.Popen(
                [nginx, "-c", str(conf), "-p", str(workdir / "nginx")], start_new_session=True
            )
            started("nginx", process, f"http://127.0.0.1:{nginx_port}")
            urls["engine-nginx"], hop["engine-nginx"] = urls["nginx"], "nginx"
        if {"python-proxy", "engine-python-proxy"} & set(chosen):
            proxy_port = free_port()
            proxy = [sys.executable, str(ROOT / "benchmarks" / "minimal_python_proxy.py")]
            process = subprocess.Popen(
                [*proxy, f"http://127.0.0.1:{endpoint.http}", str(proxy_port)], start_new_session=True
            )
            started("python-proxy", process, f"http://127.0.0.1:{proxy_port}")
            urls["engine-python-proxy"], hop["engine-python-proxy"] = urls["python-proxy"], "python-proxy"
        for path, data_path, upstream in (
            ("router-bls", "bls", "http"),
            ("router-engine", "engine", "http"),
            ("router-bls-grpc", "bls", "grpc"),
        ):
            if path in chosen:
                started(path, *start_router(routes[data_path], upstream))
        if "router-uvicorn" in chosen:
            started("router-uvicorn", *start_uvicorn_router(routes["engine"]))
        time.sleep(1.0)  # nginx and the routers' first readiness poll

        tokenizer = ModelTokenizer(
            load_tokenizer(str(SPEC.parent / built.stack.model("tiny-chat").tokenizer_dir)), True
        )
        prompt_ids = _prompt_ids(tokenizer)
        triton_body = {"text_input": PROMPT, "max_tokens": args.max_tokens, "stream": True}
        engine_body = {
            "input_ids": prompt_ids,
            "input_lengths": len(prompt_ids),
            "request_output_len": args.max_tokens,
            "streaming": True,
            "exclude_input_in_output": True,
            "end_id": tokenizer.end_id,
            "pad_id": tokenizer.pad_id,
        }
        openai_body = {"model": "tiny-chat", "prompt": PROMPT, "max_tokens": args.max_tokens, "stream": True}
        bls_path = f"/v2/models/{TRITON_MODEL}/generate_stream"
        engine_path = f"/v2/models/{ENGINE_MODEL}/generate_stream"
        direct = f"http://127.0.0.1:{endpoint.http}"

        async def grpc_one(client: GrpcUpstream) -> Sample:
            start, ttft, events = time.perf_counter(), 0.0, 0
            call = GenerateCall(TRITON_MODEL, dict(triton_body), "bench")
            async for response in client.generate(endpoint, call):
                if response.text:
                    events += 1
                    if events == 1:
                        ttft = time.perf_counter() - start
            return ttft, events

        def triton(url: str, body: dict[str, Any], count: Callable[[dict[str, Any]], Any]):
            return lambda s, g: lambda: sse_request(s, url, body, count)

        def router(name: str):
            return lambda s, g: (
                lambda: sse_request(s, urls[name] + "/v1/completions", openai_body, openai_text)
            )

        makers: dict[str, Callable[[aiohttp.ClientSession, GrpcUpstream], OneRequest]] = {
            "bls-direct": triton(direct + bls_path, triton_body, triton_text),
            "engine-direct": triton(direct + engine_path, engine_body, engine_tokens),
            "bls-direct-grpc": lambda s, g: lambda: grpc_one(g),
        }
        for name in ("nginx", "python-proxy"):
            if name in urls:
                makers[name] = triton(urls[name] + bls_path, triton_body, triton_text)
                makers[f"engine-{name}"] = triton(urls[name] + engine_path, engine_body, engine_tokens)
        for name in ("router-bls", "router-engine", "router-bls-grpc", "router-uvicorn"):
            if name in urls:
                makers[name] = router(name)
        paths = {name: makers[name] for name in chosen}
        profiler = None
        if args.profile and "router-engine" in roots:
            profiler = _profile_later(py_spy, roots["router-engine"], args.profile, levels)
        meter = CpuMeter(roots, own_only=frozenset({"client"}))
        results = asyncio.run(measure(paths, levels, args.requests, meter, hop, profiler))
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

    report(results, args)
    failed = {name: sum(f["errors"] for f in by_level.values()) for name, by_level in results.items()}
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


def _prompt_ids(tokenizer: ModelTokenizer) -> list[int]:
    """The prompt as the router and the preprocessing model encode it (special tokens added)."""
    text, special = tokenizer.prompt_text(PROMPT, None)
    return asyncio.run(tokenizer.encode(text, special))


def report(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"\nstreaming, max_tokens={args.max_tokens}, one tritonserver (reference engine), "
        f"placement {args.placement}; CPU µs per streamed token per process tree (c > 1)"
    )
    print(
        f"{'path':<19} {'c':>3} {'TTFT p50 ms':>11} {'TTFT p99 ms':>11} {'tok/s':>7} {'×bls-direct':>11} "
        f"{'triton µs':>9} {'hop µs':>7} {'client µs':>9} {'errors':>6}"
    )
    base = results.get("bls-direct", {})
    for name, by_level in results.items():
        for concurrency, figures in by_level.items():
            ratio = (
                figures["tokens_per_s"] / base[concurrency]["tokens_per_s"]
                if concurrency in base
                else float("nan")
            )
            cpu = figures.get("cpu_us_per_token") or {}
            cells = [f"{cpu[k]:.0f}" if k in cpu else "-" for k in ("triton", "hop", "client")]
            print(
                f"{name:<19} {concurrency:>3} {figures['ttft_p50_ms']:>11.2f} {figures['ttft_p99_ms']:>11.2f} "
                f"{figures['tokens_per_s']:>7.0f} {ratio:>11.2f} {cells[0]:>9} {cells[1]:>7} {cells[2]:>9} "
                f"{figures['errors']:>6}"
            )
    verdict = []
    engine, direct = results.get("router-engine", {}), results.get("engine-direct", {})
    if 1 in engine and 1 in direct:
        delta = engine[1]["ttft_p50_ms"] - direct[1]["ttft_p50_ms"]
        verdict.append(
            f"c=1 router-engine TTFT p50 overhead vs engine-direct {delta:+.2f} ms (bar ≤ 0.25 ms)"
        )
        for proxy in ("engine-python-proxy", "engine-nginx"):
            if 1 in results.get(proxy, {}):
                floor = results[proxy][1]["ttft_p50_ms"] - direct[1]["ttft_p50_ms"]
                verdict.append(
                    f"c=1 {proxy} (a hop with no work) {floor:+.2f} ms vs engine-direct; "
                    f"router-engine beyond it {delta - floor:+.2f} ms"
                )
    if 64 in engine and 64 in base:
        ratio = engine[64]["tokens_per_s"] / base[64]["tokens_per_s"]
        verdict.append(f"c=64 router-engine {ratio:.2f}× bls-direct tok/s (bar ≥ 1.0×)")
    costs = [f["cpu_us_per_token"]["hop"] for c, f in engine.items() if c > 1 and "cpu_us_per_token" in f]
    if costs:
        verdict.append(
            f"router CPU per streamed token {min(costs):.0f}-{max(costs):.0f} µs "
            f"(one core carries {1e6 / max(costs):.0f}-{1e6 / min(costs):.0f} tok/s)"
        )
    failed = {name: sum(f["errors"] for f in by_level.values()) for name, by_level in results.items()}
    if any(failed.values()):
        verdict.append("failed requests: " + ", ".join(f"{n} {k}" for n, k in failed.items() if k))
    print("\n".join(verdict))


def _profile_later(
    py_spy: str, pid: int, out: Path, levels: list[int]
) -> Callable[[str, int], Callable[[], None] | None]:
    """A hook for measure(): at router-engine's highest level, start py-spy on the router and return
    what stops it (py-spy writes its SVG when it gets SIGINT)."""
    top = max(levels)

    def hook(path: str, concurrency: int) -> Callable[[], None] | None:
        if path != "router-engine" or concurrency != top:
            return None
        process = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--output", str(out), "--rate", "200", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches

        def stop() -> None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)

        return stop

    return hook


if __name__ == "__main__":
    sys.exit(main())
