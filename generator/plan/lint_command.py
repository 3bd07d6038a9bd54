"""``tritonstack lint``: every finding with its id, severity and fix; exit 1 when any is an error."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from generator.errors import TritonstackError
from generator.plan.lints import LINTS, lint_stack

__all__ = ["HELP", "configure", "run", "main"]

HELP = "check a stack for problems Triton would only show at load time (ids, severities, fixes)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, nargs="?", help="the stack spec (stack.yaml)")
    parser.add_argument("--json", action="store_true", help="print findings as JSON")
    parser.add_argument("--list", action="store_true", help="list every lint id and exit")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for lint_id, (severity, summary) in LINTS.items():
            print(f"{lint_id}  {severity:7}  {summary}")
        return 0
    if args.spec is None:
        print("error: give the stack spec to lint (or --list)", file=sys.stderr)
        return 2
    from generator.spec import load_spec

    try:
        stack = load_spec(args.spec)
        findings = lint_stack(stack, base_dir=args.spec.resolve().parent)
    except TritonstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
        errors = sum(f.severity == "error" for f in findings)
        print(f"{len(findings)} finding(s), {errors} error(s)")
    return 1 if any(f.severity == "error" for f in findings) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tritonstack lint", description=HELP)
    configure(parser)
    return run(parser.parse_args(argv))
