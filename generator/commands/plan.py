"""``tritonstack plan``: the capacity plan of a stack, as a table or as JSON.

Exit 0 when the stack fits, 1 when it does not (or, through ``cli.main``, when the spec is invalid).
"""

from __future__ import annotations

import argparse
import json

from generator.commands.common import add_spec_argument
from generator.plan import plan_stack
from generator.plan.table import format_plan
from generator.spec import load_spec

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (for machines)")


def run(args: argparse.Namespace) -> int:
    plan = plan_stack(load_spec(args.spec), base_dir=args.spec.resolve().parent)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2, sort_keys=False))
    else:
        print(format_plan(plan), end="")
    return 1 if plan.problems else 0
