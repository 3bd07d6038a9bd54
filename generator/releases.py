"""Triton container releases we render for, read from ``catalogs/triton_releases.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

import yaml

__all__ = ["TritonRelease", "RELEASES"]


@dataclass(frozen=True)
class TritonRelease:
    release: str
    trtllm: str
    tensor_names: Literal["0.19", "1.x"]
    engine_backend: bool

    @property
    def container_image(self) -> str:
        return f"nvcr.io/nvidia/tritonserver:{self.release}-trtllm-python-py3"


def _load() -> dict[str, TritonRelease]:
    text = resources.files("generator.catalogs").joinpath("triton_releases.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)["releases"]
    return {name: TritonRelease(release=name, **fields) for name, fields in raw.items()}


RELEASES: dict[str, TritonRelease] = _load()
