"""tritonstack validate: check a spec, and the repositories it renders to, without writing."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from generator.commands.common import add_reference_engine_argument, add_spec_argument
from generator.pipeline import build


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    add_reference_engine_argument(parser)


def run(args: argparse.Namespace) -> int:
    built = build(args.spec, Path(tempfile.gettempdir()) / "tritonstack-validate", reference_engine=args.reference_engine)
    for note in built.notes:
        print(f"note: {note}")
    stack = built.stack
    repos = sum(1 for path in built.files if path.endswith("/config.pbtxt"))
    print(
        f"{args.spec}: valid — {len(stack.models)} model(s), {len(stack.pools)} pool(s), "
        f"{repos} Triton model configs for Triton {stack.target.triton} "
        f"(TensorRT-LLM {stack.target.release.trtllm})"
    )
    return 0
