"""The advisor: which GPU, precision, tensor parallelism, batch and pool layout serve a workload
within its latency targets at the lowest cost per million output tokens.

The search (shaped like NVIDIA's aiconfigurator, written from this project's own latency model in
:mod:`generator.plan.latency`): for every candidate GPU × weight precision the GPU can run × TP (up
to the GPUs of a node) × max batch, the engine must fit the GPU's plannable memory with the batch's
KV cache. Two layouts are priced:

* aggregated — replicas of one engine; prefills ride in the decode steps (ITL grows with batch/OSL
  prefills per step); replicas = ⌈users / batch⌉ (or ⌈rate / requests per second of a replica⌉);
* disaggregated — a prefill pool and a decode pool of the same engine shape (a spec model has one
  TP); decode replicas as above, prefill replicas the fewest that keep the prefill queue (M/D/1) and
  the KV transfer within the TTFT target.

Cost is the whole deployment: every GPU of every replica, over the output tokens it serves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from generator.errors import TritonstackError
from generator.plan.catalogs import GIB, Catalogs, Gpu
from generator.plan.latency import LatencyModel, aggregated_point, mdl_wait_factor
from generator.plan.memory import (
    activation_bytes,
    format_for_quant_algo,
    kv_bytes_per_token,
    weight_bytes,
    weight_bytes_per_rank,
)
from generator.spec import ModelFacts

__all__ = ["Workload", "Sla", "ModelInput", "Candidate", "Advice", "advise", "stack_fragment", "LADDER"]

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TENSOR_PARALLEL = (1, 2, 4, 8)
MAX_PREFILL_UTILIZATION = 0.8
# "What each change buys": hardware, then precision, then the engine layout, as the Blackwell story goes.
LADDER = (("h100", "bf16"), ("h100", "fp8"), ("b200", "fp8"), ("b200", "nvfp4"))


@dataclass(frozen=True)
class Workload:
    input_len: int
    output_len: int
    users: int | None = None  # concurrent users (closed loop), or
    rate: float | None = None  # requests per second (open loop)

    def __post_init__(self) -> None:
        if (self.users is None) == (self.rate is None):
            raise TritonstackError("workload: give exactly one of users (concurrent) or rate (requests/s)")


@dataclass(frozen=True)
class Sla:
    ttft_s: float
    itl_s: float


@dataclass(frozen=True)
class ModelInput:
    name: str
    facts: ModelFacts
    checkpoint_dir: str
    tokenizer_dir: str


@dataclass(frozen=True)
class Candidate:
    model: str
    gpu: str
    precision: str
    mode: str  # aggregated | disaggregated
    tensor_parallel: int
    batch: int
    prefill_replicas: int  # 0 when aggregated
    decode_replicas: int  # the replicas that decode (aggregated: all)
    gpus: int
    ttft_s: float
    itl_s: float
    tokens_per_s: float  # output tokens/s of the whole deployment
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    usd_per_million: float
    price_per_gpu_hour: float
    meets_sla: bool

    def label(self) -> str:
        split = f" {self.prefill_replicas}P:{self.decode_replicas}D" if self.mode == "disaggregated" else ""
        return f"{self.gpu} {self.precision} TP{self.tensor_parallel} b{self.batch} {self.mode}{split}"


@dataclass(frozen=True)
class Advice:
    workload: Workload
    sla: Sla
    candidates: list[Candidate]  # every evaluated candidate that fits memory
    ranked: list[Candidate]  # meeting the SLA, cheapest first
    ladder: list[dict[str, Any]]
    prices: dict[str, tuple[float, bool]]  # gpu → (price, assumed?)

    def to_json(self, top: int) -> dict[str, Any]:
        return {
            "workload": asdict(self.workload),
            "sla": asdict(self.sla),
            "prices": {k: {"usd_per_gpu_hour": p, "assumed": a} for k, (p, a) in self.prices.items()},
            "evaluated": len(self.candidates),
            "meeting_sla": len(self.ranked),
            "ranked": [asdict(c) for c in self.ranked[:top]],
            "what_each_change_buys": self.ladder,
        }


def _precisions(model: ModelInput, gpu: Gpu, wanted: tuple[str, ...], catalogs: Catalogs) -> list[str]:
    """A published quantized checkpoint is served as it is; a BF16 one in every format the GPU runs."""
    quant = model.facts.quantization
    fixed = format_for_quant_algo(quant.quant_algo) if quant is not None and quant.quant_algo else None
    options = [fixed] if fixed else list(wanted)
    usable = []
    for key in options:
        fmt = catalogs.formats[key]
        if fmt.needs_fp4_tensor_cores and not gpu.has_fp4:
            continue  # lint TS002: Hopper has no FP4 Tensor Cores
        if tuple(map(int, gpu.sm.split("."))) < tuple(map(int, fmt.min_sm.split("."))):
            continue
        usable.append(key)
    return usable


def _evaluate(
    model: ModelInput, gpu: Gpu, precision: str, tp: int, workload: Workload, sla: Sla, price: float,
    catalogs: Catalogs,
) -> list[Candidate]:
    c = catalogs.constants
    facts = model.facts
    fmt = catalogs.formats[precision]
    quant = facts.quantization if format_for_quant_algo(facts.quantization.quant_algo if facts.quantization else None) else None
    weights = weight_bytes(facts, fmt, catalogs.formats["bf16"], quant)
    kv = kv_bytes_per_token(facts, catalogs.kv_formats["fp8"], tp, 1)
    latency = LatencyModel(gpu, facts, weights, kv, precision, tp, 1, c)
    isl, osl = workload.input_len, workload.output_len
    per_sequence = kv.per_sequence(isl + osl)
    out: list[Candidate] = []
    prefill_s = latency.prefill_seconds(isl)
    transfer_s = per_sequence * tp / (gpu.interconnect_gb_s * 1e9 * c.kv_transfer_efficiency)
    for batch in BATCHES:
        fixed = (
            weight_bytes_per_rank(weights, tp, 1)
            + activation_bytes(facts, max(c.default_max_num_tokens, isl), batch, tp)
            + c.runtime_overhead_gib * GIB
        )
        if (gpu.plannable_bytes - fixed) * c.kv_share_of_free < batch * per_sequence:
            break  # larger batches do not fit either
        if workload.users is not None and batch > workload.users and batch > 1 and batch // 2 >= workload.users:
            break  # a batch the users never fill
        for mode in ("aggregated", "disaggregated"):
            candidate = _layout(
                model, gpu, precision, tp, batch, mode, latency, prefill_s, transfer_s, workload, sla, price
            )
            if candidate is not None:
                out.append(candidate)
    return out


def _layout(
    model: ModelInput, gpu: Gpu, precision: str, tp: int, batch: int, mode: str, latency: LatencyModel,
    prefill_s: float, transfer_s: float, workload: Workload, sla: Sla, price: float,
) -> Candidate | None:
    isl, osl = workload.input_len, workload.output_len
    context = isl + osl // 2
    if mode == "aggregated":
        point = aggregated_point(latency, batch, isl, osl)
        itl, step = point.itl_s, latency.decode_step_seconds(batch, context)
        if workload.users is not None:
            replicas = math.ceil(workload.users / batch)
            rate = workload.users / (point.ttft_s + osl * itl)
        else:
            assert workload.rate is not None
            replicas = math.ceil(workload.rate / point.requests_per_s)
            rate = workload.rate
        utilization = rate / replicas * prefill_s
        if utilization >= 1:
            return None
        ttft = prefill_s * mdl_wait_factor(utilization) + step
        prefill_replicas, decode_replicas, gpus = 0, replicas, replicas * tp
    else:
        itl = latency.decode_step_seconds(batch, context)
        if workload.users is not None:
            decode_replicas = math.ceil(workload.users / batch)
            rate = workload.users / (prefill_s + transfer_s + osl * itl)
        else:
            assert workload.rate is not None
            decode_replicas = math.ceil(workload.rate * osl * itl / batch)
            rate = workload.rate
        prefill_replicas = max(1, math.ceil(rate * prefill_s / MAX_PREFILL_UTILIZATION))
        while True:
            ttft = prefill_s * mdl_wait_factor(rate * prefill_s / prefill_replicas) + transfer_s
            if ttft <= sla.ttft_s or prefill_replicas >= 4 * decode_replicas + 8:
                break
            prefill_replicas += 1
        gpus = (prefill_replicas + decode_replicas) * tp
    tokens = rate * osl
    return Candidate(
        model=model.name,
        gpu=gpu.key,
        precision=precision,
        mode=mode,
        tensor_parallel=tp,
        batch=batch,
        prefill_replicas=prefill_replicas,
        decode_replicas=decode_replicas,
        gpus=gpus,
        ttft_s=ttft,
        itl_s=itl,
        tokens_per_s=tokens,
        tokens_per_s_per_gpu=tokens / gpus,
        tokens_per_s_per_user=1 / itl,
        usd_per_million=price * gpus / (tokens * 3600) * 1e6,
        price_per_gpu_hour=price,
        meets_sla=ttft <= sla.ttft_s and itl <= sla.itl_s,
    )


def advise(
    models: list[ModelInput],
    workload: Workload,
    sla: Sla,
    prices: dict[str, float | None],
    catalogs: Catalogs,
    precisions: tuple[str, ...] = ("bf16", "fp8", "nvfp4"),
    progress: Callable[[str], None] | None = None,
) -> Advice:
    """Sweep every candidate; ``prices`` maps GPU keys to USD/GPU-hour (None: the catalog's assumption)."""
    resolved: dict[str, tuple[float, bool]] = {}
    for key, price in prices.items():
        gpu = catalogs.gpu(key)
        if price is None:
            if gpu.assumed_price_per_gpu_hour is None:
                raise TritonstackError(f"--gpu {key}: the catalog assumes no price; give one as {key}=USD_PER_HOUR")
            resolved[key] = (gpu.assumed_price_per_gpu_hour, True)
        else:
            resolved[key] = (price, False)
    ladder_prices = dict(resolved)
    for key, _ in LADDER:  # the ladder compares H100 and B200 even when they are not candidates
        ladder_prices.setdefault(key, (catalogs.gpu(key).assumed_price_per_gpu_hour or 0.0, True))

    def sweep(keys: dict[str, tuple[float, bool]]) -> list[Candidate]:
        found: list[Candidate] = []
        jobs = [
            (m, catalogs.gpu(k), p, tp)
            for m in models
            for k in keys
            for p in _precisions(m, catalogs.gpu(k), precisions, catalogs)
            for tp in TENSOR_PARALLEL
            if tp <= catalogs.gpu(k).gpus_per_node
        ]
        for i, (model, gpu, precision, tp) in enumerate(jobs, 1):
            if progress is not None:
                progress(f"[{i}/{len(jobs)}] {model.name}: {gpu.key} {precision} TP{tp}")
            found += _evaluate(model, gpu, precision, tp, workload, sla, keys[gpu.key][0], catalogs)
        return found

    candidates = sweep(resolved)
    ranked = sorted((c for c in candidates if c.meets_sla), key=lambda c: (c.usd_per_million, c.gpus))
    extra = {k: v for k, v in ladder_prices.items() if k not in resolved}
    ladder = _ladder(candidates + (sweep(extra) if extra else []), models)
    return Advice(workload, sla, candidates, ranked, ladder, resolved)


def _ladder(candidates: list[Candidate], models: list[ModelInput]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for model in models:
        mine = [c for c in candidates if c.model == model.name and c.meets_sla]
        steps: list[tuple[str, list[Candidate]]] = []
        seen: set[tuple[str, str]] = set()
        for gpu, precision in LADDER:
            pool = [c for c in mine if c.gpu == gpu and c.mode == "aggregated"]
            wanted = [c for c in pool if c.precision == precision]
            if not wanted and pool:  # a pre-quantized checkpoint has one precision: take what exists
                wanted = pool
            key = (gpu, wanted[0].precision if wanted else precision)
            if key in seen:
                continue
            seen.add(key)
            steps.append((f"{gpu} {key[1]} aggregated", wanted))
        last_gpu = steps[-1][1][0] if steps and steps[-1][1] else None
        if last_gpu is not None:
            disagg = [c for c in mine if c.gpu == last_gpu.gpu and c.precision == last_gpu.precision]
            steps.append((f"{last_gpu.gpu} {last_gpu.precision} + disaggregation (best layout)", disagg))
        previous: float | None = None
        for label, options in steps:
            best = min(options, key=lambda c: c.usd_per_million) if options else None
            row: dict[str, Any] = {"model": model.name, "step": label, "best": best.label() if best else None}
            if best is not None:
                row.update(
                    usd_per_million=best.usd_per_million,
                    gpus=best.gpus,
                    tokens_per_s_per_gpu=best.tokens_per_s_per_gpu,
                    cost_vs_previous=(best.usd_per_million / previous) if previous else None,
                )
                previous = best.usd_per_million
            rows.append(row)
    return rows


def _name(text: str, allowed: str, limit: int) -> str:
    """``text`` as a spec name: lowercase, other characters as '-', trimmed to ``limit``."""
    cleaned = re.sub(f"[^a-z0-9{allowed}]+", "-", text.lower())
    cleaned = re.sub(r"\.\.+", ".", cleaned)[:limit].strip("-.")
    return cleaned or "model"


def stack_fragment(candidate: Candidate, model: ModelInput, workload: Workload, catalogs: Catalogs,
                   triton: str = "26.07") -> dict[str, Any]:
    """The candidate as a stack.yaml that ``tritonstack render`` accepts (LLM-API model: no engine build)."""
    gpu = catalogs.gpu(candidate.gpu)
    name = _name(model.name, ".-", 48)
    entry: dict[str, Any] = {
        "name": name,
        "llm_api": True,
        "checkpoint_dir": model.checkpoint_dir,
        "tokenizer_dir": model.tokenizer_dir,
        "precision": candidate.precision,
        "kv_cache_dtype": "fp8",
        "tensor_parallel": candidate.tensor_parallel,
        "max_batch_size": candidate.batch,
        "max_input_len": workload.input_len,
        "max_output_len": workload.output_len,
        "max_num_tokens": max(catalogs.constants.default_max_num_tokens, workload.input_len),
    }
    if candidate.mode == "aggregated":
        pools = [{"name": "serve", "role": "aggregated", "models": [name], "replicas": candidate.decode_replicas}]
    else:
        pools = [
            {"name": "prefill", "role": "prefill", "models": [name], "replicas": candidate.prefill_replicas},
            {"name": "decode", "role": "decode", "models": [name], "replicas": candidate.decode_replicas},
        ]
    return {
        "apiVersion": "tritonstack/v1",
        "name": _name(f"advised-{model.name}", "-", 40),
        "target": {
            "triton": triton,
            "gpu": gpu.key,
            "gpus_per_node": gpu.gpus_per_node,
            "price_per_gpu_hour": candidate.price_per_gpu_hour,
        },
        "models": [entry],
        "pools": pools,
    }


def pareto(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both tokens/s per GPU and tokens/s per user."""
    ordered = sorted(candidates, key=lambda c: (-c.tokens_per_s_per_user, -c.tokens_per_s_per_gpu))
    front: list[Candidate] = []
    best_gpu = -1.0
    for c in ordered:
        if c.tokens_per_s_per_gpu > best_gpu:
            front.append(c)
            best_gpu = c.tokens_per_s_per_gpu
    return front


def plot_pareto(advice: Advice, path: Path) -> None:
    """PNG: tokens/s per GPU against tokens/s per user, one frontier per GPU × precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: dict[str, list[Candidate]] = {}
    for c in advice.candidates:
        series.setdefault(f"{c.model} {c.gpu} {c.precision}", []).append(c)
    for label, items in sorted(series.items()):
        front = pareto(items)
        ax.plot([c.tokens_per_s_per_user for c in front], [c.tokens_per_s_per_gpu for c in front], marker="o",
                markersize=3, label=label)
    ax.axvline(1 / advice.sla.itl_s, color="grey", linestyle="--", linewidth=1, label="ITL target")
    ax.set_xlabel("output tokens/s per user")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(f"ISL {advice.workload.input_len} / OSL {advice.workload.output_len}: Pareto frontiers")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise TritonstackError(f"{path}: cannot write the plot: {exc}") from None
    finally:
        plt.close(fig)
