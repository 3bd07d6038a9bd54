"""A latency model: prefill compute-bound, decode memory-bound, both capped by the hardware's peaks.

Pure functions of the model facts, the weight/KV byte counts (:mod:`generator.plan.memory`) and one
catalog GPU. The settings it uses are planner constants in ``generator/catalogs/gpus.yaml`` and are
printed with every figure:

* prefill of ``n`` tokens = max(FLOPs / (dense peak of the weight format × prefill_compute_efficiency × TP),
  weight bytes / (bandwidth × bandwidth_efficiency)) + TP all-reduces + the per-step overhead.
  FLOPs = 2 × active parameters × n + the causal attention term 2 × layers × q_width × n² (windows cap it).
* a decode step of ``b`` sequences = max(bytes read (weights + every cached token) / (bandwidth ×
  bandwidth_efficiency), FLOPs / (peak × efficiency × TP)) + TP all-reduces + decode_step_overhead_us.

Because every time is at least FLOPs / (peak × efficiency) with efficiency ≤ 1, no figure implies more
than the catalog's peak FLOPs (``implied_tflops`` lets tests check that).

Serving at a concurrency (in-flight batching, aggregated): each decode step also carries, on average,
``batch / output_len`` prefills of new requests, so ITL = step(batch) + batch / OSL × prefill(ISL)
and TTFT = prefill(ISL) + one step (the request waits for the step in flight). Disaggregated: the
decode pool's ITL is the bare step; TTFT adds the KV transfer and the prefill queue (M/D/1 wait).
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.plan.catalogs import Gpu, PlannerConstants
from generator.plan.memory import (
    KvBytes,
    WeightBytes,
    active_params_per_token,
    decode_bytes_per_step,
    param_counts,
)
from generator.spec import ModelFacts

__all__ = ["LatencyModel", "ServingPoint", "aggregated_point", "mdl_wait_factor"]


@dataclass(frozen=True)
class LatencyModel:
    """Times of one TP×PP engine instance of one model on one GPU kind."""

    gpu: Gpu
    facts: ModelFacts
    weights: WeightBytes
    kv: KvBytes
    format_key: str
    tensor_parallel: int
    pipeline_parallel: int
    constants: PlannerConstants

    @property
    def peak_flops(self) -> float:
        """Dense peak of one GPU for this weight format, FLOP/s."""
        return self.gpu.dense_tflops(self.format_key) * 1e12

    @property
    def _active_params(self) -> int:
        counts = param_counts(self.facts)
        return active_params_per_token(self.facts, counts)

    def _attention_flops(self, tokens: int, context: int) -> float:
        """QKᵀ and AV for ``tokens`` new tokens each attending to ``context`` earlier tokens on average."""
        f = self.facts
        q_width = f.num_attention_heads * f.head_dim
        sliding = f.sliding_window_layers
        full = f.n_attention_layers - sliding
        window = min(context, f.sliding_window) if f.sliding_window else context
        return 4.0 * q_width * tokens * (full * context + sliding * window)

    def _allreduce_seconds(self, tokens: int) -> float:
        tp = self.tensor_parallel
        if tp <= 1:
            return 0.0
        c = self.constants
        message = tokens * self.facts.hidden_size * 2  # BF16 activations
        per_allreduce = 2 * (tp - 1) / tp * message / (self.gpu.interconnect_gb_s * 1e9)
        layers = self.facts.num_layers / self.pipeline_parallel
        return 2 * layers * (per_allreduce + c.allreduce_latency_us * 1e-6) * self.pipeline_parallel

    def _compute_seconds(self, gemm_flops: float, attention_flops: float = 0.0) -> float:
        """GEMMs run at the weight format's rate; attention at the KV cache's (FP8 or BF16), never FP4."""
        attention_rate = self.gpu.dense_tflops("fp8" if self.kv.bytes_per_element <= 1 else "bf16") * 1e12
        efficiency = self.constants.prefill_compute_efficiency * self.tensor_parallel
        return (gemm_flops / self.peak_flops + attention_flops / attention_rate) / efficiency

    def _memory_seconds(self, read_bytes: float) -> float:
        return read_bytes / (self.gpu.bandwidth_bytes_s * self.constants.bandwidth_efficiency)

    def prefill_flops(self, tokens: int) -> float:
        return 2.0 * self._active_params * tokens + self._attention_flops(tokens, tokens // 2)

    def _prefill_compute(self, tokens: int) -> float:
        return self._compute_seconds(2.0 * self._active_params * tokens, self._attention_flops(tokens, tokens // 2))

    def prefill_seconds(self, tokens: int) -> float:
        """One prompt of ``tokens`` through the engine (batch of one prompt)."""
        weights_read = decode_bytes_per_step(
            self.facts, self.weights, self.kv, 1, 0, self.tensor_parallel, self.pipeline_parallel
        ) * self.pipeline_parallel
        compute = self._prefill_compute(tokens)
        return (
            max(compute, self._memory_seconds(weights_read))
            + self._allreduce_seconds(tokens)
            + self.constants.decode_step_overhead_us * 1e-6
        )

    def decode_flops(self, batch: int, context: int) -> float:
        return 2.0 * self._active_params * batch + self._attention_flops(batch, context)

    def decode_memory_seconds(self, batch: int, context: int) -> float:
        read = decode_bytes_per_step(
            self.facts, self.weights, self.kv, batch, context, self.tensor_parallel, self.pipeline_parallel
        )
        return self._memory_seconds(read)

    def decode_compute_seconds(self, batch: int, context: int) -> float:
        return self._compute_seconds(2.0 * self._active_params * batch, self._attention_flops(batch, context))

    def decode_step_seconds(self, batch: int, context: int) -> float:
        """One decode step of ``batch`` sequences at ``context`` cached tokens each."""
        compute = self.decode_compute_seconds(batch, context)
        return (
            max(self.decode_memory_seconds(batch, context), compute)
            + self._allreduce_seconds(batch)
            + self.constants.decode_step_overhead_us * 1e-6
        )

    def implied_tflops(self, flops: float, seconds: float) -> float:
        """FLOP/s per GPU a figure implies (for checks against the catalog peak)."""
        return flops / seconds / (self.tensor_parallel * self.pipeline_parallel) / 1e12


@dataclass(frozen=True)
class ServingPoint:
    """One engine instance serving ``batch`` concurrent sequences of ISL/OSL in steady state."""

    batch: int
    ttft_s: float
    itl_s: float
    output_tokens_per_s: float  # of this instance
    requests_per_s: float


def aggregated_point(latency: LatencyModel, batch: int, input_len: int, output_len: int) -> ServingPoint:
    """In-flight batching with prefills mixed into the decode steps (the aggregated pool)."""
    context = input_len + output_len // 2
    step = latency.decode_step_seconds(batch, context)
    prefill = latency.prefill_seconds(input_len)
    itl = step + batch / max(output_len, 1) * prefill
    ttft = prefill + step
    cycle = ttft + output_len * itl
    return ServingPoint(
        batch=batch,
        ttft_s=ttft,
        itl_s=itl,
        output_tokens_per_s=batch * output_len / cycle,
        requests_per_s=batch / cycle,
    )


def mdl_wait_factor(utilization: float) -> float:
    """Mean time in an M/D/1 queue over the service time: 1 + ρ / (2(1 − ρ)); infinite at ρ ≥ 1."""
    if utilization >= 1:
        return float("inf")
    return 1 + utilization / (2 * (1 - utilization))
