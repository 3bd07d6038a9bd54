"""``tritonstack recipes``: write per-model engine build scripts for the target node."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from generator.errors import TritonstackError, WriteError
from generator.plan.recipes import render_recipes

__all__ = ["HELP", "configure", "run", "main", "write_recipes"]

HELP = "write per-model engine build scripts (quantize + trtllm-build, or ModelOpt for the LLM-API target)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the stack spec (stack.yaml)")
    parser.add_argument("--out", type=Path, default=Path("build/recipes"), help="output folder (default build/recipes)")


def write_recipes(files: dict[str, bytes], out_dir: Path) -> list[Path]:
    """Write the scripts (executable) and the index; returns the paths written."""
    written = []
    try:
        for relative, data in sorted(files.items()):
            path = out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o755 if relative.endswith(".sh") else 0o644)
            os.replace(tmp, path)
            written.append(path)
    except OSError as exc:
        raise WriteError(f"{out_dir}: cannot write recipes: {exc}") from None
    return written


def run(args: argparse.Namespace) -> int:
    from generator.spec import load_spec

    try:
        stack = load_spec(args.spec)
        paths = write_recipes(render_recipes(stack, base_dir=args.spec.resolve().parent), args.out)
    except TritonstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tritonstack recipes", description=HELP)
    configure(parser)
    return run(parser.parse_args(argv))
