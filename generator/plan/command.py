"""``tritonstack plan``: the capacity plan of a stack, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from generator.errors import TritonstackError
from generator.plan.plan import plan_stack
from generator.plan.table import format_plan

__all__ = ["HELP", "configure", "run", "main"]

HELP = "capacity plan per GPU and per model: weights, KV budgets, concurrency, decode ceiling, $/M tokens"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the stack spec (stack.yaml)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (for machines)")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the stack fits, 1 when it does not or the spec is invalid."""
    from generator.spec import load_spec  # the spec module pulls in every settings model; import on use

    try:
        stack = load_spec(args.spec)
        plan = plan_stack(stack, base_dir=args.spec.resolve().parent)
    except TritonstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(plan.to_json(), indent=2, sort_keys=False))
    else:
        print(format_plan(plan), end="")
    return 1 if plan.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tritonstack plan", description=HELP)
    configure(parser)
    return run(parser.parse_args(argv))
