"""``tritonstack recipes``: write per-model engine build scripts for the target node."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from generator.commands.common import add_spec_argument
from generator.errors import WriteError
from generator.plan.recipes import render_recipes
from generator.spec import load_spec

__all__ = ["configure", "run", "write_recipes"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
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
    stack = load_spec(args.spec)
    for path in write_recipes(render_recipes(stack, base_dir=args.spec.resolve().parent), args.out):
        print(path)
    return 0
