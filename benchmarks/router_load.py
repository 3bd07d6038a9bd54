"""Benchmark: the router under heavy and hostile load, over the quickstart stack (issue 12).

Three probes against ``tritonstack router`` in front of the four tritonservers of
``examples/quickstart.yaml`` (reference engine, CPU), all on loopback. It measures and prints; it
asserts nothing (the exit status is 0 whenever the probes ran).

(a) load: ``--concurrency`` clients at once, each sending one streaming ``/v1/completions`` of
    ``--max-tokens`` to tiny-chat (its pool has two replicas), ``--runs`` times. Admission is widened
    so that every request can be admitted: max_inflight_per_replica = concurrency / replicas,
    max_queue = 2 × concurrency, queue_timeout_s = ``--request-timeout``. Per run: success rate and
    client-measured TTFT (request sent → first content, generator/bench's StreamingClient), p50/p99.
(b) health: ``GET /health`` latency polled back to back, first alone (baseline), then while sixteen
    prompts of ``--big-prompt-bytes`` (1 MB) are sent at once, which the router must refuse (4xx)
    before tokenizing them. Prints p50/p99/max of both windows and the answers the big prompts got.
(c) poison: ``--poison-concurrency`` clients of normal traffic for ``--poison-seconds``, first alone,
    then with a poison request (``"top_k": 9223372036854775808``, any value ≥ 2^31 makes Triton
    answer 500) about once a second. Prints the pool's success rate in both windows (target: the
    same) and the answers the poison requests got (target: 400, never a replica ejection).

Bounded: each request has a deadline (``--request-timeout``), each phase a time limit, every count is
fixed by the arguments. Every process it starts (tritonservers, the router) is stopped at the end,
also after an error or Ctrl-C. Figures from a shared machine compare within one run only.

    .venv/bin/python benchmarks/router_load.py --concurrency 128 --runs 1        # a quick check
    .venv/bin/python benchmarks/router_load.py --concurrency 2048 --runs 5       # issue 12's figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.bench.client import RequestOptions, StreamingClient, http_client
from generator.bench.records import RequestRecord
from generator.bench.settings import Endpoint, Timeouts
from generator.bench.workload import Prompt
from generator.pipeline import build
from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes
from generator.runtime.launcher import Launcher, LaunchSettings
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

SPEC = ROOT / "examples" / "quickstart.yaml"
MODEL = "tiny-chat"
POOL = "chat"
PROMPT = "The quick brown fox jumps over the lazy dog"
POISON_TOP_K = 9223372036854775808  # 2^63: Triton answers 500 for any top_k ≥ 2^31 (issue 12)
BIG_PROMPTS = 16
LOOPBACK = "127.0.0.1"


# --- small figures ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{1000 * seconds:.1f}"  # NaN: no sample


def tally(statuses: list[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{status} ×{count}" for status, count in sorted(counts.items())) or "-"


# --- processes ----------------------------------------------------------------------------------------


def raise_open_files_limit(wanted: int) -> None:
    """Thousands of client sockets here and in the router (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def start_router(routes: Path, overrides: dict[str, Any], workdir: Path) -> tuple[subprocess.Popen[str], str]:
    document = yaml.safe_load(routes.read_text())
    document["router"].update(overrides)
    config = workdir / "routes-load.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    log = (workdir / "router.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "router", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("tritonstack router: "):
        stop_process(process)
        raise RuntimeError(f"router did not start; see {workdir / 'router.log'}")
    # Keep draining stdout so a chatty router never blocks on a full pipe.
    output = process.stdout
    threading.Thread(target=lambda: [None for _ in output], daemon=True).start()
    return process, line.split()[2]


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"router at {url} not ready within {seconds:g} s")


# --- probes -------------------------------------------------------------------------------------------


def client_timeouts(args: argparse.Namespace) -> Timeouts:
    """The client's limits: a stream may go silent for as long as the whole request may take."""
    return Timeouts(connect_s=30.0, stall_s=args.request_timeout, request_s=args.request_timeout)


def streaming_client(http: httpx.AsyncClient, args: argparse.Namespace) -> StreamingClient:
    timeouts = client_timeouts(args)
    options = RequestOptions(
        api="completions",
        max_tokens=args.max_tokens,
        ignore_eos=False,
        seed=0,
        api_key=None,
        timeouts=timeouts,
    )
    return StreamingClient(http, options, time.perf_counter)


async def probe_load(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """(a) every run: --concurrency requests at once; success rate and client TTFT."""
    endpoint = Endpoint("router", url, MODEL)
    rows = []
    async with http_client(client_timeouts(args), args.concurrency + 16) as http:
        client = streaming_client(http, args)
        await client.send(endpoint, Prompt(text=PROMPT), 0, 0)  # warm the router, tokenizer and engines
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            records: list[RequestRecord] = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        client.send(endpoint, Prompt(text=f"{PROMPT} {i}"), i, i)
                        for i in range(args.concurrency)
                    )
                ),
                timeout=args.request_timeout + 60,
            )
            wall = time.perf_counter() - started
            ttfts = [r.ttft_s for r in records if r.ok and r.ttft_s is not None]
            errors = [f"{r.error}: {r.error_detail[:80]}" for r in records if not r.ok]
            row = {
                "run": run,
                "requests": len(records),
                "ok": len(ttfts),
                "success": len(ttfts) / len(records),
                "ttft_p50_s": percentile(ttfts, 0.50),
                "ttft_p99_s": percentile(ttfts, 0.99),
                "ttft_max_s": max(ttfts, default=float("nan")),
                "wall_s": wall,
                "errors": sorted(set(errors))[:5],
            }
            rows.append(row)
            print(
                f"  run {run}: {row['ok']}/{row['requests']} ok, TTFT p50 {ms(row['ttft_p50_s'])} ms "
                f"p99 {ms(row['ttft_p99_s'])} ms, {wall:.1f} s",
                flush=True,
            )
            for error in row["errors"]:
                print(f"    {error}", flush=True)
    return rows


async def poll_health(http: httpx.AsyncClient, url: str, until: asyncio.Event) -> list[float]:
    """GET /health back to back until ``until`` is set; the latency of each (a failure counts as inf)."""
    latencies = []
    while not until.is_set():
        started = time.perf_counter()
        try:
            ok = (await http.get(f"{url}/health", timeout=10)).status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - started if ok else float("inf"))
        await asyncio.sleep(0.005)
    return latencies


async def probe_health(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """(b) /health latency alone, then while sixteen big prompts are sent at once."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=BIG_PROMPTS + 4)) as http:
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(http, url, stop))
        await asyncio.sleep(args.health_window)
        stop.set()
        baseline = await poller

        big_prompt = "lorem ipsum " * (args.big_prompt_bytes // 12)
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(http, url, stop))
        await asyncio.sleep(0.2)  # the poller is running before the first big prompt arrives

        async def big(index: int) -> str:
            body = {"model": MODEL, "prompt": f"{index} {big_prompt}", "max_tokens": args.max_tokens}
            try:
                reply = await http.post(f"{url}/v1/completions", json=body, timeout=args.request_timeout)
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return str(reply.status_code)

        started = time.perf_counter()
        answers = await asyncio.wait_for(
            asyncio.gather(*(big(i) for i in range(BIG_PROMPTS))), timeout=args.request_timeout + 30
        )
        refused_in = time.perf_counter() - started
        await asyncio.sleep(0.2)
        stop.set()
        during = await poller

    def figures(latencies: list[float]) -> dict[str, float]:
        return {
            "polls": len(latencies),
            "failed": sum(1 for x in latencies if x == float("inf")),
            "p50_s": percentile(latencies, 0.50),
            "p99_s": percentile(latencies, 0.99),
            "max_s": max(latencies, default=float("nan")),
        }

    return {
        "baseline": figures(baseline),
        "during": figures(during),
        "answers": answers,
        "refused_in_s": refused_in,
    }


async def probe_poison(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """(c) normal traffic alone, then with a poison request about once a second."""
    endpoint = Endpoint("router", url, MODEL)
    async with http_client(client_timeouts(args), args.poison_concurrency + 8) as http:
        client = streaming_client(http, args)

        async def traffic(seconds: float) -> list[RequestRecord]:
            records: list[RequestRecord] = []
            until = time.perf_counter() + seconds

            async def worker(offset: int) -> None:
                while time.perf_counter() < until:
                    index = offset + len(records)
                    records.append(
                        await client.send(endpoint, Prompt(text=f"{PROMPT} {index}"), index, index)
                    )

            await asyncio.wait_for(
                asyncio.gather(*(worker(i * 1_000_000) for i in range(args.poison_concurrency))),
                timeout=seconds + args.request_timeout + 30,
            )
            return records

        async def poison(seconds: float) -> list[str]:
            answers = []
            until = time.perf_counter() + seconds
            while time.perf_counter() < until:
                body = {
                    "model": MODEL,
                    "prompt": PROMPT,
                    "max_tokens": args.max_tokens,
                    "top_k": POISON_TOP_K,
                }
                try:
                    reply = await http.post(f"{url}/v1/completions", json=body, timeout=30)
                    answers.append(str(reply.status_code))
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)
                await asyncio.sleep(1.0)
            return answers

        alone = await traffic(args.poison_seconds)
        poisoned, answers = await asyncio.gather(traffic(args.poison_seconds), poison(args.poison_seconds))

    def figures(records: list[RequestRecord]) -> dict[str, Any]:
        ok = sum(1 for r in records if r.ok)
        return {
            "requests": len(records),
            "ok": ok,
            "success": ok / len(records) if records else float("nan"),
            "errors": tally([f"{r.error}: {r.error_detail[:60]}" for r in records if not r.ok]),
        }

    return {"alone": figures(alone), "poisoned": figures(poisoned), "poison_answers": answers}


# --- the run ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", type=int, default=2048, help="(a) requests at once per run (2048)")
    parser.add_argument("--runs", type=int, default=5, help="(a) runs at that concurrency (5)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per request, every probe (16)")
    parser.add_argument(
        "--request-timeout", type=float, default=300.0, help="client deadline per request, seconds (300)"
    )
    parser.add_argument("--health-window", type=float, default=3.0, help="(b) baseline /health window, s (3)")
    parser.add_argument(
        "--big-prompt-bytes", type=int, default=1_000_000, help="(b) size of each of the 16 prompts (1 MB)"
    )
    parser.add_argument("--poison-concurrency", type=int, default=16, help="(c) normal-traffic clients (16)")
    parser.add_argument("--poison-seconds", type=float, default=20.0, help="(c) each window, seconds (20)")
    parser.add_argument(
        "--probes", default="load,health,poison", help="which probes, comma-separated (load,health,poison)"
    )
    parser.add_argument(
        "--router-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a router setting in routes.yaml after the widened admission (YAML value); repeatable",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.runs < 1 or args.poison_concurrency < 1:
        parser.error("--concurrency, --runs and --poison-concurrency must be at least 1")
    unknown = set(args.probes.split(",")) - {"load", "health", "poison"}
    if unknown:
        parser.error(f"unknown probe(s): {', '.join(sorted(unknown))}")
    return args


def router_overrides(args: argparse.Namespace, replicas: int) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "max_inflight_per_replica": max(64, -(-args.concurrency // replicas)),
        "max_queue": 2 * args.concurrency,
        "queue_timeout_s": args.request_timeout,
        "max_connections": max(4096, 2 * args.concurrency + 64),
    }
    for setting in args.router_setting:
        key, _, value = setting.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def print_tables(results: dict[str, Any]) -> None:
    if "load" in results:
        rows = results["load"]["runs"]
        print(f"\n(a) load: concurrency {results['load']['concurrency']}, router {results['load']['router']}")
        print(
            f"{'run':>4} {'requests':>9} {'success':>8} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} "
            f"{'max ms':>9} {'wall s':>7}"
        )
        for row in rows:
            print(
                f"{row['run']:>4} {row['requests']:>9} {row['success']:>8.1%} {ms(row['ttft_p50_s']):>12} "
                f"{ms(row['ttft_p99_s']):>12} {ms(row['ttft_max_s']):>9} {row['wall_s']:>7.1f}"
            )
        p99s = [row["ttft_p99_s"] for row in rows if not math.isnan(row["ttft_p99_s"])]
        if len(p99s) > 1:
            spread = (max(p99s) - min(p99s)) / statistics.median(p99s)
            print(
                f"TTFT p99 across runs: {ms(min(p99s))}–{ms(max(p99s))} ms "
                f"(spread {spread:.0%} of the median)"
            )
    if "health" in results:
        health = results["health"]
        print(
            f"\n(b) /health while {BIG_PROMPTS} prompts of {results['health_bytes']} bytes are sent at once"
        )
        print(f"{'window':<22} {'polls':>6} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, key in (("alone", "baseline"), ("during big prompts", "during")):
            f = health[key]
            print(
                f"{name:<22} {f['polls']:>6} {f['failed']:>7} {ms(f['p50_s']):>8} {ms(f['p99_s']):>8} "
                f"{ms(f['max_s']):>8}"
            )
        print(
            f"big prompts answered: {tally(health['answers'])}; "
            f"the last {health['refused_in_s']:.2f} s after sending"
        )
    if "poison" in results:
        poison = results["poison"]
        print(f"\n(c) pool {POOL!r} with a poison request (top_k = 2^63) about once a second")
        print(f"{'window':<14} {'requests':>9} {'ok':>6} {'success':>8}  errors")
        for name, key in (("alone", "alone"), ("with poison", "poisoned")):
            f = poison[key]
            print(f"{name:<14} {f['requests']:>9} {f['ok']:>6} {f['success']:>8.1%}  {f['errors']}")
        print(f"poison requests answered: {tally(poison['poison_answers'])}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    probes = args.probes.split(",")
    raise_open_files_limit(4 * args.concurrency + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="router-load-"))
    out = workdir / "build"
    built = build(SPEC, out, reference_engine=True)
    write_output(built.files, out)
    launcher = Launcher(
        built.stack, out, find_tritonserver(), workdir / "logs", LaunchSettings(host=LOOPBACK)
    )
    router: subprocess.Popen[str] | None = None
    results: dict[str, Any] = {"health_bytes": args.big_prompt_bytes}
    try:
        print("starting the quickstart's tritonservers (reference engine)...", flush=True)
        launcher.start()
        launcher.wait_ready()
        routes = out / ROUTES_PATH
        routes.parent.mkdir(parents=True, exist_ok=True)
        routes.write_bytes(local_routes(built.stack, launcher.endpoints(), RenderOptions(SPEC.parent, out)))
        replicas = len(launcher.endpoints()[POOL])
        overrides = router_overrides(args, replicas)
        router, url = start_router(routes, overrides, workdir)
        if not url.startswith(f"http://{LOOPBACK}:"):
            raise RuntimeError(f"router announced {url}, not a loopback address")
        wait_ready(url, 120)
        print(f"router {url} with {overrides}", flush=True)
        if "load" in probes:
            print(f"(a) load: {args.runs} run(s) of {args.concurrency} requests at once", flush=True)
            results["load"] = {
                "concurrency": args.concurrency,
                "router": overrides,
                "runs": asyncio.run(probe_load(url, args)),
            }
        if "health" in probes:
            print(f"(b) /health while {BIG_PROMPTS} big prompts are sent", flush=True)
            results["health"] = asyncio.run(probe_health(url, args))
        if "poison" in probes:
            print(f"(c) poison: 2 windows of {args.poison_seconds:g} s", flush=True)
            results["poison"] = asyncio.run(probe_poison(url, args))
    except KeyboardInterrupt:
        print("interrupted; stopping every process started", file=sys.stderr)
        return 130
    finally:
        if router is not None:
            stop_process(router)
        launcher.stop()
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nlogs (router.log, tritonservers) in {workdir}")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
