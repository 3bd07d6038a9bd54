"""Arguments several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from generator.spec import load_spec

__all__ = ["add_out_argument", "add_reference_engine_argument", "add_spec_argument", "default_out_dir"]


def add_spec_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, metavar="STACK.yaml", help="the stack spec (see `tritonstack schema`)")


def add_out_argument(parser: argparse.ArgumentParser, *, default: str = "build") -> None:
    parser.add_argument(
        "--out", type=Path, default=Path(default), metavar="DIR", help=f"output directory (default: {default}/)"
    )


def add_reference_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference-engine",
        action="store_true",
        help="serve every model with the CPU reference engine (no GPU, no TensorRT-LLM needed)",
    )


def default_out_dir(spec: Path) -> Path:
    """``build/<spec name>/``: where ``up`` and ``make demo`` write a stack they run here, so each
    spec refreshes its own output and never collides with another spec's or a GitOps ``build/``."""
    return Path("build") / load_spec(spec).name
