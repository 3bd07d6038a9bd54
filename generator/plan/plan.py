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
from generator.plan.latency import LatencyModel, aggregated_point
from generator.plan.memory import (
    KvBytes,
    WeightBytes,
    activation_bytes,
    active_params_per_token,
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
from generator.spec import Model, ModelFacts, Stack

__all__ = [
    "ModelPlan", "GpuPlan", "ServerPlan", "StackPlan", "size_stack", "check_fits", "kv_token_budgets",
]

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
    kv_token_cap: int | None = None  # max_batch_size × max_seq_len × (1 + reuse headroom when reuse is on)
    gpus_in_deployment: int | None = None  # every GPU of every pool replica serving this model
    serving_replicas: int | None = None  # replicas that decode (aggregated + decode pools)
    ttft_s: float | None = None  # latency model at decode_batch concurrency (aggregated, ISL = max_input_len)
    itl_s: float | None = None
    peak_tflops_per_gpu: float | None = None  # catalog dense peak for the weight format
    implied_tflops_per_gpu: float | None = None  # what the decode figure implies; never above the peak
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
class ServerPlan:
    """One tritonserver (one pool replica): the GPUs it holds and the memory resident on them."""

    pool: str
    replicas: int
    gpus_per_replica: int
    models: list[str]
    resident_bytes: float  # weights + activations + runtime + KV budgets, over the replica's GPUs
    resident_bytes_per_gpu_max: float


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
    servers: list[ServerPlan] = field(default_factory=list)
    fit_problems: list[str] = field(default_factory=list)  # the fit checks alone (lint TS010 reports these)
    findings: list[dict[str, str]] = field(default_factory=list)  # lint findings; errors are also problems

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
    cap_tokens: int
    fixed_tokens: int | None
    facts: ModelFacts
    weight_detail: WeightBytes
    latency: LatencyModel | None


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _nccl_bytes(world: int, catalogs: Catalogs) -> float:
    c = catalogs.constants
    if world <= 1:
        return 0.0
    return (c.nccl_mib_tp2 if world == 2 else c.nccl_mib_tp4_plus) * MIB


def size_stack(stack: Stack, catalogs: Catalogs | None = None, base_dir: Path | None = None) -> StackPlan:
    """The plan's numbers alone: memory, KV budgets, decode ceilings, cost (no lints)."""
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
        plan.notes.extend(resolved.assumptions)
        if resolved.facts is None:
            plan.notes.append(
                "no model facts: no engine or checkpoint config.json is readable here and the spec has no facts; "
                "memory was not planned for this model"
            )
            continue
        sizing[model.name] = _size_model(model, resolved, plan, gpu, catalogs)
        layers = sizing[model.name].facts.num_layers
        if plan.pipeline_parallel > layers:
            problems.append(
                f"model {model.name}: pipeline_parallel {plan.pipeline_parallel} exceeds its {layers} layers, so some "
                f"stages would hold no layer; set pipeline_parallel to at most {layers} (usually 1, 2 or 4)"
            )

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
        if gpu.unified_memory and gpu_plans:
            resident = max(g.used_bytes for g in gpu_plans.values())
            notes.append(
                f"{gpu.name}: the largest server keeps {_gib(resident)} resident; the other "
                f"{_gib(gpu.memory_usable_mib * MIB - resident)} of the box stay with the OS and CPU processes "
                "(KV budgets are capped at what each engine can hold, not grown to fill memory)"
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
        servers=_servers(stack, gpu_list),
        fit_problems=list(problems),
    )


def _servers(stack: Stack, gpus: list[GpuPlan]) -> list[ServerPlan]:
    out = []
    for pool in stack.pools:
        mine = [g for g in gpus if g.pool == pool.name]
        if not mine:
            continue
        out.append(
            ServerPlan(
                pool=pool.name,
                replicas=pool.replicas,
                gpus_per_replica=len(mine),
                models=list(pool.models),
                resident_bytes=sum(g.used_bytes for g in mine),
                resident_bytes_per_gpu_max=max(g.used_bytes for g in mine),
            )
        )
    return out


def _size_model(
    model: Model, resolved: ResolvedFacts, plan: ModelPlan, gpu: Gpu | None, catalogs: Catalogs
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
    demand = model.max_batch_size * model.max_seq_len
    headroom = c.kv_reuse_headroom if model.kv_cache.reuse else 0.0
    plan.kv_token_cap = int(demand * (1 + headroom))
    sizing = _Sizing(
        weights=plan.weight_bytes_per_gpu,
        activations=plan.activation_bytes_per_gpu,
        overhead=plan.overhead_bytes_per_gpu,
        kv=kv,
        demand_tokens=demand,
        cap_tokens=plan.kv_token_cap,
        fixed_tokens=model.kv_cache.max_tokens,
        facts=facts,
        weight_detail=weights,
        latency=LatencyModel(gpu, facts, weights, kv, fmt_key, tp, pp, c) if gpu is not None else None,
    )
    return sizing


def _place(
    stack: Stack,
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
            indices = pool.rank_gpus(model)
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
                # An engine never holds more than max_batch_size × max_seq_len tokens (plus reuse
                # headroom); what is left stays free, which on unified memory is the host's.
                share = rest * demand[m] / total_demand if total_demand else 0.0
                shares[m].append(min(share, sizing[m].cap_tokens * sizing[m].kv.per_token_all_layers))
    for name, values in shares.items():
        per_token = sizing[name].kv.per_token_all_layers
        plans[name].kv_budget_from_spec = sizing[name].fixed_tokens is not None
        plans[name].kv_token_budget = int(round(min(values) / per_token, 6)) if per_token else 0
        if sizing[name].fixed_tokens is not None:
            plans[name].kv_token_budget = min(plans[name].kv_token_budget, sizing[name].fixed_tokens)
    return gpus


def _finish_models(
    stack: Stack,
    gpu: Gpu,
    sizing: dict[str, _Sizing],
    plans: dict[str, ModelPlan],
    problems: list[str],
    catalogs: Catalogs,
) -> None:
    """Concurrency, decode ceilings and cost from the budgets."""
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
        latency = size.latency
        assert latency is not None
        # Decode ceilings: bandwidth-bound, but never faster than the Tensor Cores allow.
        seconds_one = max(latency.decode_memory_seconds(1, context), latency.decode_compute_seconds(1, context))
        seconds_batch = max(
            latency.decode_memory_seconds(batch, context), latency.decode_compute_seconds(batch, context)
        )
        plan.decode_batch = batch
        plan.decode_tokens_per_s_per_sequence = 1 / seconds_one
        plan.decode_tokens_per_s_aggregate = batch / seconds_batch
        plan.peak_tflops_per_gpu = latency.peak_flops / 1e12
        plan.implied_tflops_per_gpu = latency.implied_tflops(latency.decode_flops(batch, context), seconds_batch)
        point = aggregated_point(latency, batch, model.max_input_len, model.max_output_len)
        plan.ttft_s, plan.itl_s = point.ttft_s, point.itl_s
        gpus_total, serving = _deployment(stack, name)
        plan.gpus_in_deployment, plan.serving_replicas = gpus_total, serving
        price = stack.target.price_per_gpu_hour
        if price is not None and serving:
            # The whole deployment's cost over the whole deployment's output: every prefill and
            # decode replica is paid for, only the replicas that decode produce tokens.
            tokens_per_s = plan.decode_tokens_per_s_aggregate * serving
            plan.usd_per_million_output_tokens = price * gpus_total / (tokens_per_s * 3600) * 1e6


def _deployment(stack: Stack, name: str) -> tuple[int, int]:
    """(GPUs of every replica of every pool serving ``name``, replicas that decode it)."""
    gpus = serving = 0
    for pool in stack.pools:
        if name not in pool.models:
            continue
        gpus += pool.replicas * len(set().union(*(pool.rank_gpus(stack.model(m)) for m in pool.models)))
        if pool.role in ("aggregated", "decode"):
            serving += pool.replicas
    return gpus, serving


def check_fits(stack: Stack, base_dir: Path | None = None, catalogs: Catalogs | None = None) -> list[str]:
    """Problems that make ``stack`` not fit its GPUs, each with the numbers and the fix; empty when it fits."""
    return size_stack(stack, catalogs, base_dir).fit_problems


def kv_token_budgets(stack: Stack, base_dir: Path | None = None, catalogs: Catalogs | None = None) -> dict[str, int]:
    """Model name → ``max_tokens_in_paged_kv_cache`` for every TensorRT-LLM model the planner could size.

    Models without facts or without a target GPU are absent (the render keeps the spec's value, if any).
    """
    return size_stack(stack, catalogs, base_dir).kv_token_budgets()
