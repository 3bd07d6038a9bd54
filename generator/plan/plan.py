"""The capacity plan of a stack: per model and per GPU, as data and as a table.

How KV budgets are decided (so co-located models fit by construction, whatever order they load in):
for every GPU of every pool replica, the fixed costs of the models placed on it (weights, activation
estimate, runtime overhead, NCCL buffers) are subtracted from the plannable memory; ``kv_share_of_free``
of the rest is the GPU's KV pool. A model with ``kv_cache.max_tokens`` in the spec takes exactly that;
the rest of the pool is shared by the other models in proportion to what they can use
(max_batch_size × max_seq_len tokens). A model's budget is the smallest share over all GPUs it runs
on, expressed in tokens at the all-layers cost per token (an upper bound with sliding windows), and
is rendered as ``max_tokens_in_paged_kv_cache``.

Models on the CPU reference engine get no GPU memory plan: the plan says what they are.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.plan.catalogs import GIB, MIB, Catalogs, Gpu, load_catalogs
from generator.plan.facts import ModelFacts
from generator.plan.memory import (
    KvBytes,
    WeightBytes,
    activation_bytes,
    active_params_per_token,
    decode_bytes_per_step,
    kv_bytes_per_token,
    param_counts,
    weight_bytes,
    weight_bytes_per_rank,
)
from generator.plan.sources import (
    ResolvedFacts,
    effective_kv_dtype,
    effective_precision,
    gpu_of,
    resolve_facts,
)

__all__ = ["ModelPlan", "GpuPlan", "StackPlan", "plan_stack", "check_fits", "kv_token_budgets", "rank_gpus"]

REFERENCE_ENGINE = "reference engine (CPU, python backend; not TensorRT-LLM)"
TENSORRT_LLM = "tensorrt-llm"


@dataclass
class ModelPlan:
    name: str
    engine: str
    pools: list[str]
    facts_source: str | None = None
    precision: str | None = None
    kv_cache_dtype: str | None = None
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    params_total: int | None = None
    params_active_per_token: int | None = None
    params_unquantized: int | None = None
    weight_bytes: float | None = None
    weight_bytes_per_gpu: float | None = None
    activation_bytes_per_gpu: float | None = None
    overhead_bytes_per_gpu: float | None = None
    kv_bytes_per_token_per_gpu: float | None = None
    kv_bytes_per_sequence_per_gpu: float | None = None
    max_seq_len: int = 0
    kv_token_budget: int | None = None
    kv_budget_from_spec: bool = False
    max_concurrent_sequences: int | None = None
    decode_batch: int | None = None
    decode_tokens_per_s_per_sequence: float | None = None
    decode_tokens_per_s_aggregate: float | None = None
    usd_per_million_output_tokens: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class GpuPlan:
    pool: str
    gpu_index: int
    gpu: str
    capacity_bytes: int
    models: list[str]
    weight_bytes: float = 0.0
    activation_bytes: float = 0.0
    overhead_bytes: float = 0.0
    kv_bytes: float = 0.0

    @property
    def used_bytes(self) -> float:
        return self.weight_bytes + self.activation_bytes + self.overhead_bytes + self.kv_bytes

    @property
    def free_bytes(self) -> float:
        return self.capacity_bytes - self.used_bytes

    @property
    def headroom(self) -> float:
        return self.free_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


@dataclass
class StackPlan:
    stack: str
    triton: str
    trtllm: str
    gpu: str | None
    gpu_name: str | None
    gpus_per_node: int
    price_per_gpu_hour: float | None
    constants: dict[str, float]
    models: list[ModelPlan]
    gpus: list[GpuPlan]
    problems: list[str]
    notes: list[str]

    def kv_token_budgets(self) -> dict[str, int]:
        """Model name → ``max_tokens_in_paged_kv_cache`` for every TensorRT-LLM model that was sized."""
        return {
            m.name: m.kv_token_budget
            for m in self.models
            if m.engine == TENSORRT_LLM and m.kv_token_budget is not None and m.kv_token_budget > 0
        }

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for gpu_data, gpu in zip(data["gpus"], self.gpus):
            gpu_data.update(used_bytes=gpu.used_bytes, free_bytes=gpu.free_bytes, headroom=round(gpu.headroom, 4))
        return data


@dataclass(frozen=True)
class _Sizing:
    """What one model costs on each GPU it occupies."""

    weights: float
    activations: float
    overhead: float
    kv: KvBytes
    demand_tokens: int
    fixed_tokens: int | None
    facts: ModelFacts
    weight_detail: WeightBytes

    @property
    def fixed_bytes(self) -> float:
        return self.weights + self.activations + self.overhead


def rank_gpus(pool: Any, model: Any) -> list[int]:
    """GPU indices (within one pool replica) of a model's TP×PP ranks, as gpu_device_ids renders them.

    With in-server disaggregation the replica holds two engine copies: the context copy's GPUs, then
    the generation copy's (the next TP×PP GPUs), each with the whole model split over its ranks."""
    world = model.tensor_parallel * model.pipeline_parallel
    per_pool = getattr(pool, "gpu_ids", None)  # pool-level override, if the spec has one
    if isinstance(per_pool, dict) and model.name in per_pool:
        gpus = list(per_pool[model.name])
    elif model.gpu_ids is not None:
        gpus = list(model.gpu_ids)
    else:
        gpus = list(range(world))
    if getattr(pool, "in_server_disaggregation", False):
        gpus += [gpu + world for gpu in gpus]
    return gpus


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _nccl_bytes(world: int, catalogs: Catalogs) -> float:
    c = catalogs.constants
    if world <= 1:
        return 0.0
    return (c.nccl_mib_tp2 if world == 2 else c.nccl_mib_tp4_plus) * MIB


def plan_stack(stack: Any, catalogs: Catalogs | None = None, base_dir: Path | None = None) -> StackPlan:
    """Plan every model and every GPU of ``stack`` (a validated :class:`generator.spec.Stack`)."""
    catalogs = catalogs or load_catalogs()
    base_dir = base_dir if base_dir is not None else Path.cwd()
    gpu = gpu_of(stack, catalogs)
    c = catalogs.constants
    target = stack.target
    plans: dict[str, ModelPlan] = {}
    sizing: dict[str, _Sizing] = {}
    problems: list[str] = []
    notes: list[str] = []
    gpu_plans: dict[tuple[str, int], GpuPlan] = {}

    for model in stack.models:
        pools = [p.name for p in stack.pools if model.name in p.models]
        plan = ModelPlan(name=model.name, engine=TENSORRT_LLM, pools=pools, max_seq_len=model.max_seq_len)
        plans[model.name] = plan
        if model.reference_engine is not None:
            plan.engine = REFERENCE_ENGINE
            plan.kv_token_budget = model.reference_engine.kv_blocks * model.reference_engine.tokens_per_block
            plan.notes.append("CPU reference engine: runs on the CPU, so no GPU memory is planned or checked")
            continue
        resolved = resolve_facts(model, base_dir)
        plan.notes.extend(resolved.problems)
        if resolved.facts is None:
            plan.notes.append(
                "no model facts: no engine or checkpoint config.json is readable here and the spec has no facts; "
                "memory was not planned for this model"
            )
            continue
        sizing[model.name] = _size_model(model, resolved, plan, gpu, catalogs)

    if gpu is None:
        if sizing:
            notes.append("target.gpu is not set: GPU memory, KV budgets and decode ceilings were not planned")
    else:
        if gpu.unified_memory:
            notes.append(
                f"{gpu.name}: memory is unified with the host; {gpu.host_reserved_gib:g} GiB are left to the OS "
                "and CPU processes (NVML reports no device memory on this part)"
            )
        gpu_plans = _place(stack, gpu, sizing, plans, problems, catalogs)
        _finish_models(stack, gpu, sizing, plans, problems, catalogs)
        for g in gpu_plans.values():
            g.kv_bytes = sum(
                (plans[m].kv_token_budget or 0) * sizing[m].kv.per_token_all_layers for m in g.models
            )
    gpu_list = sorted(gpu_plans.values(), key=lambda g: (g.pool, g.gpu_index))
    return StackPlan(
        stack=stack.name,
        triton=target.triton,
        trtllm=target.release.trtllm,
        gpu=target.gpu,
        gpu_name=gpu.name if gpu else None,
        gpus_per_node=target.gpus_per_node,
        price_per_gpu_hour=target.price_per_gpu_hour,
        constants=dataclasses.asdict(c),
        models=list(plans.values()),
        gpus=gpu_list,
        problems=problems,
        notes=notes,
    )


def _size_model(
    model: Any, resolved: ResolvedFacts, plan: ModelPlan, gpu: Gpu | None, catalogs: Catalogs
) -> _Sizing:
    facts = resolved.facts
    assert facts is not None
    c = catalogs.constants
    fmt_key, base_key, quant = effective_precision(model, resolved)
    tp, pp = model.tensor_parallel, model.pipeline_parallel
    if resolved.engine is not None:
        tp, pp = resolved.engine.tensor_parallel, resolved.engine.pipeline_parallel
    weights = weight_bytes(facts, catalogs.formats[fmt_key], catalogs.formats[base_key], quant)
    kv_key = effective_kv_dtype(model, resolved, base_key, gpu)
    kv = kv_bytes_per_token(facts, catalogs.kv_formats[kv_key], tp, pp)
    max_num_tokens = model.max_num_tokens or c.default_max_num_tokens
    counts = param_counts(facts)
    plan.facts_source = resolved.source
    plan.precision, plan.kv_cache_dtype = fmt_key, kv_key
    plan.tensor_parallel, plan.pipeline_parallel = tp, pp
    plan.params_total = counts.total
    plan.params_active_per_token = active_params_per_token(facts, counts)
    plan.params_unquantized = weights.unquantized_params
    plan.weight_bytes = weights.total
    plan.weight_bytes_per_gpu = weight_bytes_per_rank(weights, tp, pp)
    plan.activation_bytes_per_gpu = activation_bytes(facts, max_num_tokens, model.max_batch_size, tp)
    plan.overhead_bytes_per_gpu = c.runtime_overhead_gib * GIB + _nccl_bytes(tp * pp, catalogs)
    plan.kv_bytes_per_token_per_gpu = kv.per_token_all_layers
    plan.kv_bytes_per_sequence_per_gpu = kv.per_sequence(model.max_seq_len)
    if kv_key == "nvfp4":
        plan.notes.append("NVFP4 KV cache: smallest footprint, but accuracy loss is likely; prefer fp8")
    sizing = _Sizing(
        weights=plan.weight_bytes_per_gpu,
        activations=plan.activation_bytes_per_gpu,
        overhead=plan.overhead_bytes_per_gpu,
        kv=kv,
        demand_tokens=model.max_batch_size * model.max_seq_len,
        fixed_tokens=model.kv_cache.max_tokens,
        facts=facts,
        weight_detail=weights,
    )
    return sizing


def _place(
    stack: Any,
    gpu: Gpu,
    sizing: dict[str, _Sizing],
    plans: dict[str, ModelPlan],
    problems: list[str],
    catalogs: Catalogs,
) -> dict[tuple[str, int], GpuPlan]:
    """Put every rank on its GPU, check fixed costs, and give each model its KV share there."""
    gpus: dict[tuple[str, int], GpuPlan] = {}
    for pool in stack.pools:
        for name in pool.models:
            if name not in sizing:
                continue
            model = stack.model(name)
            indices = rank_gpus(pool, model)
            if len(indices) > stack.target.gpus_per_node or max(indices) >= stack.target.gpus_per_node:
                problems.append(
                    f"model {name} in pool {pool.name}: its ranks use GPUs {indices} but a node has "
                    f"{stack.target.gpus_per_node} (target.gpus_per_node); lower tensor_parallel × pipeline_parallel "
                    "or gpu_ids, or raise gpus_per_node"
                )
                continue
            for index in indices:
                key = (pool.name, index)
                if key not in gpus:
                    gpus[key] = GpuPlan(pool.name, index, gpu.key, gpu.plannable_bytes, [])
                gpus[key].models.append(name)

    shares: dict[str, list[float]] = defaultdict(list)
    share_of = catalogs.constants.kv_share_of_free
    for g in gpus.values():
        g.weight_bytes = sum(sizing[m].weights for m in g.models)
        g.activation_bytes = sum(sizing[m].activations for m in g.models)
        g.overhead_bytes = sum(sizing[m].overhead for m in g.models)
        free = g.capacity_bytes - g.weight_bytes - g.activation_bytes - g.overhead_bytes
        where = f"pool {g.pool} GPU {g.gpu_index} ({gpu.name}, {_gib(g.capacity_bytes)} plannable)"
        if free <= 0:
            problems.append(
                f"{where}: weights {_gib(g.weight_bytes)} + activations {_gib(g.activation_bytes)} + runtime "
                f"{_gib(g.overhead_bytes)} of {', '.join(g.models)} exceed the GPU by {_gib(-free)}; "
                "raise tensor_parallel, use a smaller precision (fp8 halves BF16 weights, nvfp4 on Blackwell "
                "quarters them), lower max_num_tokens, or move a model to other gpu_ids"
            )
            for m in g.models:
                shares[m].append(0.0)
            continue
        pool_bytes = free * share_of
        fixed = {m: sizing[m].fixed_tokens * sizing[m].kv.per_token_all_layers for m in g.models if sizing[m].fixed_tokens}
        fixed_total = sum(fixed.values())
        if fixed_total > pool_bytes:
            asked = ", ".join(f"{m} {sizing[m].fixed_tokens} tokens ({_gib(b)})" for m, b in fixed.items())
            problems.append(
                f"{where}: kv_cache.max_tokens of {asked} need {_gib(fixed_total)} but only {_gib(pool_bytes)} "
                f"is left for KV caches (over by {_gib(fixed_total - pool_bytes)}); lower max_tokens or leave "
                "it unset so the planner sizes it"
            )
        rest = max(pool_bytes - fixed_total, 0.0)
        flexible = [m for m in g.models if m not in fixed]
        demand = {m: sizing[m].demand_tokens * sizing[m].kv.per_token_all_layers for m in flexible}
        total_demand = sum(demand.values())
        for m in g.models:
            if m in fixed:
                shares[m].append(min(fixed[m], pool_bytes))
            else:
                shares[m].append(rest * demand[m] / total_demand if total_demand else 0.0)
    for name, values in shares.items():
        per_token = sizing[name].kv.per_token_all_layers
        plans[name].kv_budget_from_spec = sizing[name].fixed_tokens is not None
        plans[name].kv_token_budget = int(min(values) // per_token) if per_token else 0
        if sizing[name].fixed_tokens is not None:
            plans[name].kv_token_budget = min(plans[name].kv_token_budget, sizing[name].fixed_tokens)
    return gpus


def _finish_models(
    stack: Any,
    gpu: Gpu,
    sizing: dict[str, _Sizing],
    plans: dict[str, ModelPlan],
    problems: list[str],
    catalogs: Catalogs,
) -> None:
    """Concurrency, decode ceilings and cost from the budgets."""
    efficiency = catalogs.constants.bandwidth_efficiency
    for name, size in sizing.items():
        plan, model = plans[name], stack.model(name)
        if plan.kv_token_budget is None:
            continue
        budget_bytes = plan.kv_token_budget * size.kv.per_token_all_layers
        per_sequence = size.kv.per_sequence(model.max_seq_len)
        plan.max_concurrent_sequences = int(budget_bytes // per_sequence) if per_sequence else 0
        if plan.max_concurrent_sequences < 1:
            if plan.kv_token_budget == 0:
                continue  # no memory left at all: the GPU's own problem line says why
            problems.append(
                f"model {name}: its KV budget of {plan.kv_token_budget} tokens cannot hold one sequence of "
                f"max_seq_len {model.max_seq_len} ({plan.kv_cache_dtype} KV); lower max_input_len/max_output_len, "
                "use an fp8 KV cache, raise tensor_parallel, or give it GPUs of its own"
            )
            continue
        batch = min(model.max_batch_size, plan.max_concurrent_sequences)
        context = model.max_input_len + model.max_output_len // 2
        args = (size.facts, size.weight_detail, size.kv)
        tp, pp = plan.tensor_parallel, plan.pipeline_parallel
        seconds_one = decode_bytes_per_step(*args, 1, context, tp, pp) / (gpu.bandwidth_bytes_s * efficiency)
        seconds_batch = decode_bytes_per_step(*args, batch, context, tp, pp) / (gpu.bandwidth_bytes_s * efficiency)
        plan.decode_batch = batch
        plan.decode_tokens_per_s_per_sequence = 1 / seconds_one
        plan.decode_tokens_per_s_aggregate = batch / seconds_batch
        price = stack.target.price_per_gpu_hour
        if price is not None:
            plan.usd_per_million_output_tokens = price * tp * pp / (plan.decode_tokens_per_s_aggregate * 3600) * 1e6


def check_fits(stack: Any, base_dir: Path | None = None, catalogs: Catalogs | None = None) -> list[str]:
    """Problems that make ``stack`` not fit its GPUs, each with the numbers and the fix; empty when it fits."""
    return plan_stack(stack, catalogs, base_dir).problems


def kv_token_budgets(stack: Any, base_dir: Path | None = None, catalogs: Catalogs | None = None) -> dict[str, int]:
    """Model name → ``max_tokens_in_paged_kv_cache`` for every TensorRT-LLM model the planner could size.

    Models without facts or without a target GPU are absent (the render keeps the spec's value, if any).
    """
    return plan_stack(stack, catalogs, base_dir).kv_token_budgets()
