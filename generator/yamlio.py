"""YAML in and out through libyaml when PyYAML was built with it (it usually is): several times
faster than the pure-Python parser, which matters for large stacks (benchmarks/render_speed.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

__all__ = ["safe_load", "safe_load_all", "safe_dump", "SafeLoader", "SafeDumper"]

SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def safe_load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 — a safe loader


def safe_load_all(text: str | bytes) -> Iterator[Any]:
    return yaml.load_all(text, Loader=SafeLoader)  # noqa: S506 — a safe loader


def safe_dump(data: Any, **options: Any) -> str:
    return yaml.dump(data, Dumper=SafeDumper, **options)
