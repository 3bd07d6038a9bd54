"""The planner's data catalogs: GPUs and number formats, read from ``generator/catalogs/*.yaml``.

The figures live in data files with their sources so that a reader can check (and correct) them
without reading code. ``load_catalogs`` returns plain frozen objects; callers pass them on, nothing
is cached at module level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from generator.errors import TritonstackError

__all__ = ["Gpu", "NumberFormat", "KvFormat", "PlannerConstants", "Catalogs", "load_catalogs", "version_key"]

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    key: str
    name: str
    memory_gb_nominal: float
    memory_usable_mib: int
    bandwidth_tb_s: float
    bf16_tflops: float | None
    fp8_tflops: float | None
    fp4_tflops: float | None
    sm: str
    unified_memory: bool
    host_reserved_gib: float
    nvlink: bool
    first_trtllm: str
    sources: tuple[str, ...]
    gpus_per_node: int = 8
    interconnect_gb_s: float = 64.0
    assumed_price_per_gpu_hour: float | None = None

    @property
    def sm_tuple(self) -> tuple[int, int]:
        major, minor = self.sm.split(".")
        return int(major), int(minor)

    @property
    def sm_arch(self) -> str:
        """``sm_100``-style name, as used in kernel and build notes."""
        major, minor = self.sm_tuple
        return f"sm_{major}{minor}"

    @property
    def is_blackwell(self) -> bool:
        return self.sm_tuple[0] >= 10

    @property
    def has_fp4(self) -> bool:
        return self.fp4_tflops is not None

    @property
    def plannable_bytes(self) -> int:
        """Memory the planner may hand out: what CUDA reports, less the host's share on unified parts."""
        return int(self.memory_usable_mib * MIB - self.host_reserved_gib * GIB)

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.bandwidth_tb_s * 1e12

    def dense_tflops(self, format_key: str) -> float:
        """Dense Tensor Core peak that GEMMs of weights in ``format_key`` run at.

        FP8-class formats (FP8, MXFP8, INT8) use the FP8 rate; NVFP4 the FP4 rate; MXFP4 weights run
        as W4A8 (FP8 activations) on Blackwell and weight-only (BF16 math) elsewhere, like INT4 AWQ.
        A rate the catalog does not have falls back to the next slower one it has.
        """
        rates = {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "fp4": self.fp4_tflops}
        wanted = {
            "fp8": "fp8", "mxfp8": "fp8", "int8_sq": "fp8", "nvfp4": "fp4",
            "mxfp4": "fp8" if self.is_blackwell else "bf16",
        }.get(format_key, "bf16")
        for kind in {"fp4": ("fp4", "fp8", "bf16"), "fp8": ("fp8", "bf16"), "bf16": ("bf16",)}[wanted]:
            if rates[kind]:
                return float(rates[kind])
        raise TritonstackError(f"{self.key}: the catalog has no Tensor Core rate for {format_key}")


@dataclass(frozen=True)
class NumberFormat:
    key: str
    name: str
    bits_per_element: float
    element: str
    needs_fp4_tensor_cores: bool
    min_sm: str
    quantized_modules: tuple[str, ...]
    trtllm_quant_algo: str | None
    block_size: int | None
    sources: tuple[str, ...]

    @property
    def bytes_per_element(self) -> float:
        return self.bits_per_element / 8


@dataclass(frozen=True)
class KvFormat:
    key: str
    bits_per_element: float
    min_sm: str

    @property
    def bytes_per_element(self) -> float:
        return self.bits_per_element / 8


@dataclass(frozen=True)
class PlannerConstants:
    bandwidth_efficiency: float
    runtime_overhead_gib: float
    nccl_mib_tp2: float
    nccl_mib_tp4_plus: float
    kv_share_of_free: float
    default_max_num_tokens: int
    tokens_per_block: int
    kv_reuse_headroom: float = 1.0
    prefill_compute_efficiency: float = 0.5
    decode_step_overhead_us: float = 500.0
    allreduce_latency_us: float = 8.0
    kv_transfer_efficiency: float = 0.5


@dataclass(frozen=True)
class Catalogs:
    gpus: dict[str, Gpu]
    formats: dict[str, NumberFormat]
    kv_formats: dict[str, KvFormat]
    constants: PlannerConstants

    def gpu(self, key: str) -> Gpu:
        try:
            return self.gpus[key]
        except KeyError:
            known = ", ".join(sorted(self.gpus))
            raise TritonstackError(f"target.gpu: unknown GPU {key!r}; the catalog knows {known}") from None


def version_key(version: str) -> tuple[int, ...]:
    """``"1.0.3.2510"`` → ``(1, 0, 3, 2510)``; suffixes such as ``post1``/``rc2`` are ignored."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _read(name: str) -> dict[str, Any]:
    text = resources.files("generator.catalogs").joinpath(name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_catalogs() -> Catalogs:
    gpu_data = _read("gpus.yaml")
    gpus = {
        key: Gpu(key=key, **{**fields, "sources": tuple(fields.get("sources", ()))})
        for key, fields in gpu_data["gpus"].items()
    }
    fmt_data = _read("number_formats.yaml")
    formats = {
        key: NumberFormat(
            key=key,
            name=fields["name"],
            bits_per_element=float(fields["bits_per_element"]),
            element=fields["element"],
            needs_fp4_tensor_cores=fields["needs_fp4_tensor_cores"],
            min_sm=fields["min_sm"],
            quantized_modules=tuple(fields["quantized_modules"]),
            trtllm_quant_algo=fields["trtllm_quant_algo"],
            block_size=fields.get("block_size"),
            sources=tuple(fields.get("sources", ())),
        )
        for key, fields in fmt_data["formats"].items()
    }
    kv_formats = {
        key: KvFormat(key=key, bits_per_element=float(f["bits_per_element"]), min_sm=f["min_sm"])
        for key, f in fmt_data["kv_formats"].items()
    }
    return Catalogs(gpus=gpus, formats=formats, kv_formats=kv_formats, constants=PlannerConstants(**gpu_data["planner"]))
