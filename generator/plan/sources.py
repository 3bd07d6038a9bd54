"""Which model facts apply to a spec model, and what precision and KV dtype it really runs in.

Engine files win over checkpoint files, which win over values written in the spec: a built engine is
what will run. Files that do not exist where the generator runs (engine paths are often node paths)
are simply not used; files that exist but cannot be read are reported, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from generator.plan.catalogs import Catalogs, Gpu
from generator.plan.facts import EngineFacts, FactsError, read_checkpoint_dir, read_engine_dir
from generator.plan.memory import format_for_quant_algo
from generator.spec import Model, ModelFacts, QuantFacts, Stack

__all__ = ["ResolvedFacts", "resolve_facts", "local_path", "effective_precision", "effective_kv_dtype"]

_DTYPE_FORMATS = {"bfloat16": "bf16", "float16": "fp16", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class ResolvedFacts:
    facts: ModelFacts | None
    engine: EngineFacts | None
    source: str | None  # human-readable origin of the facts
    problems: list[str] = field(default_factory=list)
    # What the planner had to assume (e.g. a quantization it does not model), said in plan and lint.
    assumptions: list[str] = field(default_factory=list)


def local_path(text: str | None, base_dir: Path) -> Path | None:
    """A spec path as seen from here: relative paths are relative to the spec file's directory."""
    if text is None:
        return None
    path = Path(text)
    return path if path.is_absolute() else base_dir / path


def resolve_facts(model: Model, base_dir: Path) -> ResolvedFacts:
    resolved = _resolve(model, base_dir)
    quant = resolved.engine.quantization if resolved.engine is not None else (
        resolved.facts.quantization if resolved.facts is not None else None
    )
    if quant is not None and quant.quant_algo is not None and format_for_quant_algo(quant.quant_algo) is None:
        planned_as = effective_precision(model, resolved)[0]
        resolved.assumptions.append(
            f"{resolved.source}: quant_algo {quant.quant_algo} is not modelled by the planner; weights were planned "
            f"as {planned_as}, so memory and speed figures may be off — check the "
            "checkpoint's real size, or point the model at an FP8/NVFP4/MXFP4/INT4-AWQ/INT8-SQ export"
        )
    return resolved


def _resolve(model: Model, base_dir: Path) -> ResolvedFacts:
    problems: list[str] = []
    engine_dir = local_path(model.engine_dir, base_dir)
    if engine_dir is not None and (engine_dir / "config.json").is_file():
        try:
            engine = read_engine_dir(engine_dir)
            return ResolvedFacts(engine.model, engine, f"engine {engine_dir / 'config.json'}", problems)
        except FactsError as exc:
            problems.append(str(exc))
    checkpoint = local_path(model.checkpoint_dir, base_dir)
    if checkpoint is not None and (checkpoint / "config.json").is_file():
        try:
            return ResolvedFacts(read_checkpoint_dir(checkpoint), None, f"checkpoint {checkpoint}", problems)
        except FactsError as exc:
            problems.append(str(exc))
    spec_facts = model.facts
    if spec_facts is not None:
        return ResolvedFacts(spec_facts, None, "spec facts", problems)
    return ResolvedFacts(None, None, None, problems)


def effective_precision(model: Model, resolved: ResolvedFacts) -> tuple[str, str, QuantFacts | None]:
    """(weight format key, base format key, quantization facts) the model runs with.

    A built engine or a quantized checkpoint decides; otherwise the spec's ``precision`` (which the
    engine recipe will produce).
    """
    if resolved.engine is not None:
        engine = resolved.engine
        base = _DTYPE_FORMATS.get(engine.dtype, "bf16")
        fmt = format_for_quant_algo(engine.quantization.quant_algo) or base
        return fmt, base, engine.quantization
    quant = resolved.facts.quantization if resolved.facts is not None else None
    base = "fp16" if model.precision == "fp16" else "bf16"
    if quant is not None and format_for_quant_algo(quant.quant_algo):
        return format_for_quant_algo(quant.quant_algo) or base, base, quant
    return model.precision, base, quant


def effective_kv_dtype(model: Model, resolved: ResolvedFacts, base: str, gpu: Gpu | None) -> str:
    """KV cache element format: the engine's, else the spec's, else the checkpoint's, else the default.

    The default is FP8 on Blackwell (what the recipes build) and the base precision elsewhere.
    """
    if resolved.engine is not None:
        algo = resolved.engine.quantization.kv_cache_quant_algo
        return _kv_key(algo) or base
    if model.kv_cache_dtype != "auto":
        return str(model.kv_cache_dtype)
    quant = resolved.facts.quantization if resolved.facts is not None else None
    if quant is not None and _kv_key(quant.kv_cache_quant_algo):
        return _kv_key(quant.kv_cache_quant_algo) or base
    if gpu is not None and gpu.is_blackwell:
        return "fp8"
    return base


def _kv_key(algo: str | None) -> str | None:
    if algo is None:
        return None
    return {"FP8": "fp8", "NVFP4": "nvfp4", "INT8": "int8"}.get(algo.upper())


def gpu_of(stack: Stack, catalogs: Catalogs) -> Gpu | None:
    return catalogs.gpu(stack.target.gpu) if stack.target.gpu is not None else None
