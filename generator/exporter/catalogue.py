"""Every series the exporter publishes: name, type, help and label names, in one place.

Names follow the Prometheus conventions: the ``tritonstack_`` prefix, base units (bytes, seconds),
``_total`` on counters, ratios in 0..1. Labels are bounded: ``model`` (a spec model), ``pool``,
``replica`` (an index, or a pod address under DNS discovery), ``step`` (one of :data:`STEPS`),
``gpu`` (an index). The render step and the tests read this catalogue, so a dashboard cannot query
a name the exporter never publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PREFIX", "STEPS", "MetricSpec", "CATALOGUE", "by_name"]

PREFIX = "tritonstack"

# Which part of a request a Triton model serves; the suffix of its name decides (generator.naming).
STEPS = ("entry", "preprocessing", "engine", "postprocessing")

TARGET = ("pool", "replica")
MODEL = ("model", "pool", "replica")
STEP = ("model", "pool", "replica", "step")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...]


def _m(name: str, kind: Literal["counter", "gauge"], labels: tuple[str, ...], help_text: str) -> MetricSpec:
    return MetricSpec(f"{PREFIX}_{name}", kind, help_text, labels)


CATALOGUE: tuple[MetricSpec, ...] = (
    # --- per target -------------------------------------------------------------------------------
    _m("target_up", "gauge", TARGET, "1 when the replica's Triton /metrics answered and parsed on this scrape"),
    _m("target_scrape_duration_seconds", "gauge", TARGET, "Time spent fetching and parsing the replica's /metrics"),
    _m("target_scrape_errors_total", "counter", TARGET, "Failed fetches or parses of the replica's /metrics"),
    # --- tokens and engine state, from the TensorRT-LLM families (nv_llm_*, nv_trt_llm_*) --------
    _m("prompt_tokens_total", "counter", MODEL, "Prompt tokens of finished requests (nv_llm_input_token_len_sum)"),
    _m("generated_tokens_total", "counter", MODEL,
       "Generated tokens of finished requests (nv_llm_output_token_len_sum); moves when a request finishes"),
    _m("engine_finished_requests_total", "counter", MODEL,
       "Requests the engine finished (nv_llm_output_token_len_count)"),
    _m("engine_iterations_total", "counter", MODEL,
       "Engine iterations (nv_trt_llm_general_metrics iteration_counter); does not move while idle"),
    _m("engine_active_requests", "gauge", MODEL, "Requests in the engine's active set"),
    _m("engine_waiting_requests", "gauge", MODEL, "Active requests the engine did not schedule this iteration"),
    _m("engine_max_active_requests", "gauge", MODEL, "Size of the engine's active set (max batch)"),
    _m("kv_cache_blocks", "gauge", (*MODEL, "state"), "Paged KV cache blocks by state (used, free)"),
    _m("kv_cache_usage_ratio", "gauge", MODEL, "Used KV cache blocks / all blocks"),
    # --- Triton's per-model counters, by request step ------------------------------------------
    _m("triton_requests_total", "counter", (*STEP, "outcome"),
       "Requests Triton finished per step (outcome success or failure)"),
    _m("triton_queue_seconds_total", "counter", STEP, "Time requests waited in Triton's scheduler queue"),
    _m("triton_compute_seconds_total", "counter", STEP, "Time Triton spent executing requests (compute infer)"),
    _m("triton_request_seconds_total", "counter", STEP, "End-to-end time of requests inside Triton"),
    _m("triton_pending_requests", "gauge", STEP, "Requests queued in Triton and not yet executing"),
    # --- resident memory --------------------------------------------------------------------------
    _m("server_resident_memory_bytes", "gauge", TARGET, "RSS of the tritonserver process (host memory)"),
    _m("model_resident_memory_bytes", "gauge", STEP,
       "RSS of the python backend stubs running this model step (host memory; shared pages counted per stub)"),
    _m("server_gpu_memory_bytes", "gauge", (*TARGET, "gpu"), "GPU memory NVML reports for the tritonserver process"),
    _m("model_gpu_memory_bytes", "gauge", (*STEP, "gpu"), "GPU memory NVML reports for this model step's stubs"),
    _m("gpu_memory_used_bytes", "gauge", ("gpu", "source"),
       "GPU memory in use; source=nvml (device counters) or source=meminfo (unified memory: MemTotal - MemAvailable)"),
    _m("gpu_memory_total_bytes", "gauge", ("gpu", "source"),
       "GPU memory size; source=meminfo means unified memory shared with the host (MemTotal)"),
    _m("gpu_memory_reporting_supported", "gauge", ("gpu",),
       "1 when NVML reports device memory; 0 on unified-memory GPUs (e.g. GB10) where the meminfo fallback is used"),
    _m("memory_pressure_stalled_seconds_total", "counter", (),
       "Time some task stalled on memory (/proc/pressure/memory 'some'); early warning on unified memory"),
    # --- the exporter itself ----------------------------------------------------------------------
    _m("exporter_source_up", "gauge", ("source",), "1 when the source (processes, nvml, meminfo) was read on this scrape"),
    _m("exporter_source_duration_seconds", "gauge", ("source",), "Time spent reading the source on this scrape"),
    _m("exporter_scrape_duration_seconds", "gauge", (), "Time spent producing this scrape"),
    _m("exporter_build_info", "gauge", ("version",), "Always 1; the exporter's version as a label"),
)

_BY_NAME = {spec.name: spec for spec in CATALOGUE}


def by_name(name: str) -> MetricSpec:
    return _BY_NAME[name]
