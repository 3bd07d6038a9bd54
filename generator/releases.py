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
    def engine_kv_between_servers(self) -> bool:
        """Can two engine-backend tritonservers (a prefill and a decode pool) move KV between them?

        0.19 picks the cache transceiver from the environment (``TRTLLM_USE_UCX_KVCACHE=1``); the 1.x
        backend hard-codes ``CacheTransceiverConfig(BackendType::MPI)``, which only reaches ranks of
        one MPI world (NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/model_instance_state.cc,
        https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/inflight_batcher_llm/src/model_instance_state.cc).
        """
        return self.tensor_names == "0.19"

    @property
    def llmapi_cache_transceiver(self) -> bool:
        """``cache_transceiver_config.backend`` exists in the LLM API from TensorRT-LLM 0.20 (Triton 25.06);
        0.19's CacheTransceiverConfig has only ``max_num_tokens`` (tensorrt_llm/llmapi/llm_args.py)."""
        return self.tensor_names != "0.19"

    @property
    def container_image(self) -> str:
        return f"nvcr.io/nvidia/tritonserver:{self.release}-trtllm-python-py3"


def _load() -> dict[str, TritonRelease]:
    text = resources.files("generator.catalogs").joinpath("triton_releases.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)["releases"]
    return {name: TritonRelease(release=name, **fields) for name, fields in raw.items()}


RELEASES: dict[str, TritonRelease] = _load()
