"""``tritonstack bench``: compare OpenAI-compatible stacks on one repeatable workload.

A thin layer over the library: parse options into :class:`BenchSettings`, run the load, print a
table per stack and a delta table, write JSON, CSV and PNG plots. Exit status: 0 when every
measured request completed, 3 when the benchmark ran but some requests failed (they are in the
tables and the JSON), 1 when it could not run (a :class:`BenchError` naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from generator.bench.client import RequestOptions, StreamingClient, http_client
from generator.bench.plots import plot_throughput, plot_ttft
from generator.bench.progress import Progress
from generator.bench.report import (
    client_versions,
    delta_table,
    result_csv,
    result_document,
    result_json,
    stack_table,
)
from generator.bench.runner import Runner, StackRun
from generator.bench.settings import (
    BenchError,
    BenchSettings,
    Endpoint,
    Timeouts,
    parse_concurrency,
    parse_endpoints,
    parse_models,
    parse_rates,
)
from generator.bench.stats import StackSummary, deltas, summarize
from generator.bench.tokens import TokenCounter, Tokenizer, load_tokenizer
from generator.bench.workload import Workload, load_dataset

__all__ = ["DESCRIPTION", "EXIT_REQUESTS_FAILED", "configure", "run", "execute", "BenchOutcome"]
DESCRIPTION = """\
Send the same greedy, fixed-length streaming requests to each stack: a warm-up (excluded), a
serial run for TTFT, decode tokens/s and wall time, then a concurrency sweep (closed loop) or
Poisson request rates (open loop). Prints a table per stack and the deltas against --baseline;
--out writes results.json, results.csv, tables.txt and PNG plots. Progress goes to stderr.
Exit status: 0 all requests completed, 3 some failed (reported), 1 the benchmark could not run.

example:
  tritonstack bench --endpoint nim=http://host:8000 --endpoint nvfp4=http://host:9000 \\
      --model llama-3.1-8b --concurrency 1,2,4,8 --baseline nim --out results/
"""
EXIT_REQUESTS_FAILED = 3

_DEFAULTS = BenchSettings(endpoints=())
_DEFAULT_TIMEOUTS = Timeouts()


def configure(parser: argparse.ArgumentParser) -> None:
    stacks = parser.add_argument_group("stacks")
    stacks.add_argument(
        "--endpoint", action="append", default=[], metavar="NAME=URL", required=True,
        help="an OpenAI-compatible server, e.g. nim=http://host:8000 (repeat for each stack)",
    )
    stacks.add_argument(
        "--model", action="append", default=[], metavar="[STACK=]MODEL", required=True,
        help="model name sent to every stack, or STACK=MODEL for one stack (repeatable)",
    )
    stacks.add_argument("--api", choices=("chat", "completions"), default=_DEFAULTS.api,
                        help="which OpenAI API to call (default: %(default)s)")
    stacks.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="environment variable holding the API key sent as a Bearer token when set "
                        "(default: %(default)s); the key is never written to the results")
    stacks.add_argument("--baseline", metavar="NAME", help="stack the delta table compares against")

    work = parser.add_argument_group("workload")
    prompts = work.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", default=_DEFAULTS.prompt, help="the one fixed prompt (default: a fixed sentence)")
    prompts.add_argument("--dataset", type=Path, metavar="FILE",
                         help="prompts from a file: JSON Lines with 'prompt' or 'messages', or text, one per line")
    work.add_argument("--max-tokens", type=int, metavar="N", default=_DEFAULTS.max_tokens,
                      help="output budget per request (default: %(default)s)")
    work.add_argument("--ignore-eos", action="store_true",
                      help="ask the server to decode past EOS so every request yields --max-tokens "
                      "(vLLM, trtllm-serve, NIM)")
    work.add_argument("--tokenizer", type=Path, metavar="DIR",
                      help="local Hugging Face tokenizer to count tokens when a server sends no usage")

    load = parser.add_argument_group("load")
    levels = load.add_mutually_exclusive_group()
    levels.add_argument("--concurrency", default="1,2,4,8", metavar="C,...",
                        help="closed-loop client counts to sweep (default: %(default)s)")
    levels.add_argument("--request-rate", metavar="R,...",
                        help="open-loop Poisson arrival rates in requests/s, instead of --concurrency")
    load.add_argument("--requests", type=int, metavar="N", default=_DEFAULTS.requests_per_point,
                      help="measured requests per concurrency level or rate (default: %(default)s)")
    load.add_argument("--serial-requests", type=int, metavar="N", default=_DEFAULTS.serial_requests,
                      help="requests in the serial run (default: %(default)s)")
    load.add_argument("--warmup", type=int, metavar="N", default=_DEFAULTS.warmup_requests,
                      help="warm-up requests per stack, excluded from figures (default: %(default)s)")
    load.add_argument("--seed", type=int, metavar="N", default=_DEFAULTS.seed,
                      help="seed for sampling and the Poisson schedule (default: %(default)s)")

    limits = parser.add_argument_group("timeouts (seconds)")
    limits.add_argument("--connect-timeout", type=float, metavar="S", default=_DEFAULT_TIMEOUTS.connect_s)
    limits.add_argument("--stall-timeout", type=float, metavar="S", default=_DEFAULT_TIMEOUTS.stall_s,
                        help="longest silence inside an open stream before it counts as stalled")
    limits.add_argument("--request-timeout", type=float, metavar="S", default=_DEFAULT_TIMEOUTS.request_s,
                        help="deadline for a whole request")

    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="DIR",
                     help="write results.json, results.csv, tables.txt, throughput.png, ttft.png here")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> BenchSettings:
    pairs = parse_endpoints(args.endpoint)
    names = [name for name, _ in pairs]
    models = parse_models(args.model, names)
    points = parse_rates(args.request_rate) if args.request_rate else parse_concurrency(args.concurrency)
    if args.baseline is not None and args.baseline not in names:
        raise BenchError(f"--baseline {args.baseline!r}: no --endpoint has that name; endpoints are {names}")
    for option, value, least in (
        ("--max-tokens", args.max_tokens, 1),
        ("--requests", args.requests, 1),
        ("--serial-requests", args.serial_requests, 1),
        ("--warmup", args.warmup, 0),
    ):
        if value < least:
            raise BenchError(f"{option} {value}: must be {least} or more")
    for option, seconds in (
        ("--connect-timeout", args.connect_timeout),
        ("--stall-timeout", args.stall_timeout),
        ("--request-timeout", args.request_timeout),
    ):
        if not seconds > 0:
            raise BenchError(f"{option} {seconds}: must be above 0 seconds")
    api_key = environ.get(args.api_key_env) or None
    return BenchSettings(
        endpoints=tuple(Endpoint(name, url, models[name]) for name, url in pairs),
        api=args.api,
        prompt=args.prompt,
        dataset=args.dataset,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        warmup_requests=args.warmup,
        serial_requests=args.serial_requests,
        load_points=tuple(points),
        requests_per_point=args.requests,
        seed=args.seed,
        baseline=args.baseline,
        tokenizer_dir=args.tokenizer,
        api_key=api_key,
        timeouts=Timeouts(args.connect_timeout, args.stall_timeout, args.request_timeout),
    )


class BenchOutcome:
    """Runs and summaries of one benchmark, with the deltas when a baseline was named."""

    def __init__(self, settings: BenchSettings, runs: list[StackRun]) -> None:
        self.settings = settings
        self.runs = runs
        self.summaries: list[StackSummary] = [summarize(run) for run in runs]
        self.deltas = deltas(self.summaries, settings.baseline) if settings.baseline else []

    @property
    def failed_requests(self) -> int:
        return sum(p.failed for s in self.summaries for p in s.points)

    def tables(self) -> str:
        text = "\n".join(stack_table(s) for s in self.summaries)
        if self.settings.baseline and len(self.summaries) > 1:
            text += "\n" + delta_table(self.deltas, self.settings.baseline)
        return text

    def serial_ttfts(self) -> dict[str, list[float]]:
        return {
            run.endpoint.name: [r.ttft_s for r in run.points[0].records if r.ok and r.ttft_s is not None]
            for run in self.runs
        }


async def execute(
    settings: BenchSettings, workload: Workload, tokenizer: Tokenizer | None, progress: Progress
) -> BenchOutcome:
    """Run the whole benchmark with one HTTP client, closed when done whatever happens."""
    widest = max(
        [int(p.value) if p.kind == "concurrency" else settings.requests_per_point for p in settings.load_points] + [1]
    )
    options = RequestOptions(
        api=settings.api,
        max_tokens=settings.max_tokens,
        ignore_eos=settings.ignore_eos,
        seed=settings.seed,
        api_key=settings.api_key,
        timeouts=settings.timeouts,
    )
    async with http_client(settings.timeouts, max_connections=widest) as http:
        client = StreamingClient(http, options, clock=time.perf_counter)
        runner = Runner(client, workload, TokenCounter(tokenizer), time.perf_counter, progress)
        runs = await runner.run(settings)
    return BenchOutcome(settings, runs)


def write_results(outcome: BenchOutcome, out_dir: Path, plots: bool, with_tokenizer: bool) -> list[Path]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"--out {out_dir}: cannot create it ({exc.strerror or exc})") from None
    document = result_document(
        outcome.settings,
        outcome.runs,
        outcome.summaries,
        outcome.deltas,
        client_versions(with_tokenizer),
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    written = {
        out_dir / "results.json": result_json(document),
        out_dir / "results.csv": result_csv(outcome.summaries),
        out_dir / "tables.txt": outcome.tables(),
    }
    try:
        for path, text in written.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"--out {out_dir}: cannot write results ({exc.strerror or exc})") from None
    paths = list(written)
    if plots:
        plot_throughput(outcome.summaries, out_dir / "throughput.png")
        plot_ttft(outcome.summaries, outcome.serial_ttfts(), out_dir / "ttft.png")
        paths += [out_dir / "throughput.png", out_dir / "ttft.png"]
    return paths


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    settings = settings_from_args(args, dict(os.environ))
    if settings.dataset is not None:
        workload = load_dataset(settings.dataset)
        workload.check_api(settings.api, f"--dataset {settings.dataset}")
    else:
        workload = Workload.single(settings.prompt)
    tokenizer = load_tokenizer(settings.tokenizer_dir) if settings.tokenizer_dir else None
    progress = Progress(stderr)
    outcome = asyncio.run(execute(settings, workload, tokenizer, progress))
    stdout.write(outcome.tables())
    if args.out is not None:
        for path in write_results(outcome, args.out, plots=not args.no_plots, with_tokenizer=tokenizer is not None):
            progress.note(f"wrote {path}")
    failed = outcome.failed_requests
    if failed:
        progress.note(f"{failed} measured request(s) failed; see the tables above")
        return EXIT_REQUESTS_FAILED
    return 0

