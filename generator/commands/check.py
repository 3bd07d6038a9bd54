"""tritonstack check: exit 1 with a unified diff when the output directory drifted from the spec."""

from __future__ import annotations

import argparse
import sys

from generator.commands.common import add_out_argument, add_reference_engine_argument, add_spec_argument
from generator.errors import DriftError
from generator.pipeline import build
from generator.write import check_output


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    add_out_argument(parser)
    add_reference_engine_argument(parser)


def run(args: argparse.Namespace) -> int:
    built = build(args.spec, args.out, reference_engine=args.reference_engine)
    try:
        check_output(built.files, args.out)
    except DriftError as drift:
        sys.stdout.write(drift.diff)
        print(f"error: {args.out}/ has drifted from {args.spec}; run `tritonstack render` to update it", file=sys.stderr)
        return 1
    print(f"{args.out}/ is up to date with {args.spec}")
    return 0
