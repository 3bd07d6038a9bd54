"""``tritonstack lint``: every finding with its id, severity and fix; exit 1 when any is an error."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from generator.errors import TritonstackError
from generator.plan.lints import LINTS, lint_stack
from generator.spec import load_spec

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, nargs="?", metavar="STACK.yaml", help="the stack spec (see `tritonstack schema`)")
    parser.add_argument("--json", action="store_true", help="print findings as JSON")
    parser.add_argument("--list", action="store_true", help="list every lint id and exit")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for lint_id, (severity, summary) in LINTS.items():
            print(f"{lint_id}  {severity:7}  {summary}")
        return 0
    if args.spec is None:
        raise TritonstackError("give the stack spec to lint (or --list)")
    findings = lint_stack(load_spec(args.spec), base_dir=args.spec.resolve().parent)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
        errors = sum(f.severity == "error" for f in findings)
        print(f"{len(findings)} finding(s), {errors} error(s)")
    return 1 if any(f.severity == "error" for f in findings) else 0
