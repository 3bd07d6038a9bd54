"""tritonstack advise: the cheapest deployment that meets a latency target, with the search shown."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from generator.errors import TritonstackError
from generator.plan.advise import Advice, ModelInput, Sla, Workload, advise, plot_pareto, stack_fragment
from generator.plan.catalogs import load_catalogs
from generator.plan.facts import read_checkpoint_dir
from generator.plan.table import format_table
from generator.yamlio import safe_dump

DESCRIPTION = """\
Sweep every candidate GPU x weight precision x tensor parallelism x max batch, aggregated and
prefill/decode-disaggregated, for a workload (input/output lengths and concurrent users or a
request rate); keep what meets the TTFT and inter-token-latency targets; rank by $/M output tokens of
the whole deployment (every GPU of every replica). Figures come from the planner's latency model
(tritonstack plan notes its settings); measure the chosen stack with `tritonstack bench`.

example:
  tritonstack advise --model /models/Llama-3.1-8B-Instruct --isl 1024 --osl 256 --users 64 \\
      --ttft-ms 1000 --itl-ms 50 --gpu h100=2.5 --gpu b200=6.5 --gpu gb10 \\
      --plot pareto.png --write-stack advised.yaml
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, type=Path, metavar="CHECKPOINT_DIR",
                        help="Hugging Face checkpoint directory (config.json, hf_quant_config.json); repeatable")
    parser.add_argument("--tokenizer", type=str, default=None, help="tokenizer_dir for the written stack "
                        "(default: the checkpoint directory)")
    parser.add_argument("--isl", type=int, required=True, help="input tokens per request")
    parser.add_argument("--osl", type=int, required=True, help="output tokens per request")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--users", type=int, help="concurrent users (closed loop)")
    load.add_argument("--rate", type=float, help="requests per second (open loop)")
    parser.add_argument("--ttft-ms", type=float, required=True, help="time-to-first-token target")
    parser.add_argument("--itl-ms", type=float, required=True, help="inter-token latency target")
    parser.add_argument("--gpu", action="append", default=None, metavar="KEY[=USD_PER_HOUR]",
                        help="candidate GPU and its price per GPU-hour; without a price the catalog's assumed one "
                        "(default: h100, b200, gb10)")
    parser.add_argument("--precision", default="bf16,fp8,nvfp4", help="weight precisions to try for BF16 "
                        "checkpoints (pre-quantized checkpoints are served as they are)")
    parser.add_argument("--top", type=int, default=10, help="rows of the ranking")
    parser.add_argument("--plot", type=Path, help="write the Pareto plot (PNG) here")
    parser.add_argument("--write-stack", type=Path, help="write the best candidate as a stack.yaml here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _prices(values: list[str] | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for value in values or ["h100", "b200", "gb10"]:
        key, _, price = value.partition("=")
        try:
            out[key] = float(price) if price else None
        except ValueError:
            raise TritonstackError(f"--gpu {value}: the price must be a number (USD per GPU-hour)") from None
    return out


def _models(paths: list[Path], tokenizer: str | None) -> list[ModelInput]:
    return [
        ModelInput(name=p.resolve().name.lower(), facts=read_checkpoint_dir(p), checkpoint_dir=str(p.resolve()),
                   tokenizer_dir=tokenizer or str(p.resolve()))
        for p in paths
    ]


def _report(advice: Advice, top: int) -> str:
    w, s = advice.workload, advice.sla
    load = f"{w.users} concurrent users" if w.users is not None else f"{w.rate:g} requests/s"
    lines = [
        f"Workload: ISL {w.input_len}, OSL {w.output_len}, {load}; SLA TTFT <= {s.ttft_s * 1e3:g} ms, "
        f"ITL <= {s.itl_s * 1e3:g} ms",
        "Prices: " + ", ".join(f"{k} ${p:g}/h{' (assumed)' if a else ''}" for k, (p, a) in advice.prices.items()),
        f"{len(advice.candidates)} candidates fit memory, {len(advice.ranked)} meet the SLA",
        "",
    ]
    rows = [
        [str(i), c.model, c.label(), str(c.gpus), f"{c.ttft_s * 1e3:,.0f}", f"{c.itl_s * 1e3:,.1f}",
         f"{c.tokens_per_s_per_gpu:,.0f}", f"{c.tokens_per_s_per_user:,.1f}", f"{c.usd_per_million:,.3f}"]
        for i, c in enumerate(advice.ranked[:top], 1)
    ]
    lines.append(format_table(["#", "model", "candidate", "GPUs", "TTFT ms", "ITL ms", "tok/s/GPU", "tok/s/user",
                               "$/M out"], rows) if rows else "Nothing meets the SLA: relax it or add GPUs.")
    ladder = [
        [r["model"], r["step"], r["best"] or "nothing meets the SLA",
         "-" if r.get("usd_per_million") is None else f"{r['usd_per_million']:,.3f}",
         "-" if r.get("tokens_per_s_per_gpu") is None else f"{r['tokens_per_s_per_gpu']:,.0f}",
         "-" if r.get("cost_vs_previous") is None else f"{r['cost_vs_previous']:.2f}x"]
        for r in advice.ladder
    ]
    lines += ["", "What each change buys (best SLA-meeting candidate per step)"]
    lines.append(format_table(["model", "step", "best", "$/M out", "tok/s/GPU", "cost vs previous"], ladder))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    catalogs = load_catalogs()
    workload = Workload(args.isl, args.osl, users=args.users, rate=args.rate)
    sla = Sla(args.ttft_ms / 1e3, args.itl_ms / 1e3)
    models = _models(args.model, args.tokenizer)
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    unknown = [p for p in precisions if p not in catalogs.formats]
    if unknown:
        raise TritonstackError(f"--precision: unknown {unknown}; the catalog knows {sorted(catalogs.formats)}")

    def progress(text: str) -> None:
        print(f"\rsearching {text}\033[K", end="", file=sys.stderr, flush=True)

    advice = advise(models, workload, sla, _prices(args.gpu), catalogs, precisions, progress=progress)
    print("\r\033[K", end="", file=sys.stderr, flush=True)
    if args.plot is not None:
        plot_pareto(advice, args.plot)
    fragment = None
    if advice.ranked:
        best = advice.ranked[0]
        model = next(m for m in models if m.name == best.model)
        fragment = stack_fragment(best, model, workload, catalogs)
        if args.write_stack is not None:
            try:
                args.write_stack.write_text(safe_dump(fragment, sort_keys=False), encoding="utf-8")
            except OSError as exc:
                raise TritonstackError(f"{args.write_stack}: cannot write: {exc}") from None
    if args.json:
        print(json.dumps({**advice.to_json(args.top), "stack": fragment}, indent=2))
    else:
        print(_report(advice, args.top), end="")
        if fragment is not None:
            where = f" (written to {args.write_stack})" if args.write_stack else ""
            print(f"\nChosen: {advice.ranked[0].label()}{where}")
        if args.plot is not None:
            print(f"Pareto plot: {args.plot}")
    return 0 if advice.ranked else 1
