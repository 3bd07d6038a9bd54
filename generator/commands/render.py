"""tritonstack render: write the whole stack into an output directory, atomically."""

from __future__ import annotations

import argparse

from generator.commands.common import add_out_argument, add_reference_engine_argument, add_spec_argument
from generator.pipeline import build
from generator.write import write_output

DESCRIPTION = """\
Render the spec into DIR: one Triton model repository per pool under DIR/model_repos/<pool>/,
plus manifest.json (content hashes). The previous DIR is replaced in one atomic step, and only if
tritonstack wrote it (see --force). Same spec, same bytes.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    add_out_argument(parser)
    add_reference_engine_argument(parser)
    parser.add_argument("--force", action="store_true", help="replace DIR even if tritonstack did not write it")
    parser.add_argument("--dry-run", action="store_true", help="list what would be written; write nothing")


def run(args: argparse.Namespace) -> int:
    built = build(args.spec, args.out, reference_engine=args.reference_engine)
    for note in built.notes:
        print(f"note: {note}")
    if args.dry_run:
        for path, data in built.files.items():
            print(f"{len(data):>9}  {path}")
        print(f"dry run: {len(built.files)} files would be written to {args.out}/")
        return 0
    result = write_output(built.files, args.out, force=args.force)
    print(f"wrote {result.written} files to {args.out}/ ({len(result.changed)} changed)")
    return 0
