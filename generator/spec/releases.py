"""Triton container releases we render for, read from ``catalogs/triton_releases.yaml``.

Each release carries the capabilities of its TensorRT-LLM backend generation as fields (the catalog
says why each differs); code asks ``release.returns_token_counts``, never which version it is. Only
``tensor_names`` names a generation, to pick the backend contract catalog of ``generator/contract/``.
"""

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
    seed_input: Literal["seed", "random_seed"]
    returns_token_counts: bool
    engine_kv_between_servers: bool
    llmapi_cache_transceiver: bool
    engine_backend: bool

    @property
    def container_image(self) -> str:
        return f"nvcr.io/nvidia/tritonserver:{self.release}-trtllm-python-py3"


def _load() -> dict[str, TritonRelease]:
    # Through the top package, not generator.catalogs: the spec package imports nothing else of the project.
    catalog = resources.files("generator").joinpath("catalogs").joinpath("triton_releases.yaml")
    text = catalog.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)["releases"]
    return {name: TritonRelease(release=name, **fields) for name, fields in raw.items()}


RELEASES: dict[str, TritonRelease] = _load()
