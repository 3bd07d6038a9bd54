"""Triton ``/metrics`` text → per model and step values under our names (pure functions).

Input families (https://github.com/triton-inference-server/server/blob/main/docs/user_guide/metrics.md):
Triton core per-model counters, and the TensorRT-LLM
backend's ``nv_trt_llm_*`` gauges and ``nv_llm_{input,output}_token_len`` histograms. The CPU
Triton build does not export HISTOGRAM families from python models, so the reference engine
publishes the histogram's ``_sum``/``_count`` as counters of those names; reading samples by name
covers both shapes.

Only Triton models whose name is ``<spec model>_<suffix>`` with a known suffix and a spec model the
pool serves are kept; anything else in the text is ignored, which keeps label values bounded.
Several series for one model (one per ``gpu_uuid``, or per ``version``) are summed.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from generator.errors import TritonstackError

__all__ = [
    "ENGINE_FAMILIES",
    "STEP_OF_SUFFIX",
    "TRITON_FAMILIES",
    "TritonParseError",
    "PoolValues",
    "parse_triton_metrics",
    "samples",
]

STEP_OF_SUFFIX = {
    "ensemble": "entry",
    "bls": "entry",
    "prefill": "entry",
    "decode": "entry",
    "preprocessing": "preprocessing",
    "postprocessing": "postprocessing",
    "tensorrt_llm": "engine",
    "context": "engine",
    "generation": "engine",
    # The LLM-API model (``<m>_llmapi``) is the whole request in one Triton model: its Triton core
    # counters are the entry's (request rate, queue time); engine families it may publish still count.
    "llmapi": "entry",
}
# Suffixes whose nv_trt_llm_* / nv_llm_* samples are the engine's.
_ENGINE_SUFFIXES = frozenset({"tensorrt_llm", "context", "generation", "llmapi"})

US = 1e-6

# Triton core sample → (our key, scale). Keys become triton_* series per (model, step).
_CORE = {
    "nv_inference_request_success": ("success", 1.0),
    "nv_inference_request_failure": ("failure", 1.0),
    "nv_inference_queue_duration_us": ("queue_seconds", US),
    "nv_inference_compute_infer_duration_us": ("compute_seconds", US),
    "nv_inference_request_duration_us": ("request_seconds", US),
    "nv_inference_pending_request_count": ("pending", 1.0),
}
# TensorRT-LLM samples → our key; selected by the family's category label.
_TOKENS = {
    "nv_llm_input_token_len_sum": "prompt_tokens",
    "nv_llm_output_token_len_sum": "generated_tokens",
    "nv_llm_output_token_len_count": "finished_requests",
}
_ENGINE = {
    ("nv_trt_llm_request_metrics", "request_type", "active"): "active",
    ("nv_trt_llm_request_metrics", "request_type", "waiting"): "waiting",
    ("nv_trt_llm_request_metrics", "request_type", "max"): "max_active",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "used"): "kv_used",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "free"): "kv_free",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "fraction"): "kv_fraction",
    ("nv_trt_llm_general_metrics", "general_type", "iteration_counter"): "iterations",
}

# The families this module reads: Triton core families of every model, and the TensorRT-LLM families
# of each engine model (what `tritonstack verify` expects a served stack to publish).
TRITON_FAMILIES: tuple[str, ...] = tuple(_CORE)
ENGINE_FAMILIES: tuple[str, ...] = (
    *dict.fromkeys(family for family, _, _ in _ENGINE),
    *dict.fromkeys(name.rsplit("_", 1)[0] for name in _TOKENS),
)


class TritonParseError(TritonstackError):
    """A /metrics answer is not Prometheus text."""


@dataclass
class PoolValues:
    """What one replica's /metrics says, keyed by spec model and step."""

    steps: dict[tuple[str, str], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    engine: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))


def _add(bucket: dict[str, float], key: str, value: float) -> None:
    bucket[key] = bucket.get(key, 0.0) + value


# One sample line of the text exposition format: name, optional {labels}, value, optional timestamp.
# prometheus_client's parser is not used: it renames counter samples (adds _total) and is several
# times slower, and the exporter parses every replica on every scrape.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = re.compile(r"\\(.)")


def _labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None:
            raise TritonParseError(f"bad labels in line {line[:120]!r}")
        value = match.group(2)
        if "\\" in value:
            value = _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)
        labels[match.group(1)] = value
        position = match.end()
    return labels


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample of exposition text as (name, labels, value); comments and blank lines skipped."""
    for line in text.splitlines():
        if not line or line.startswith("#") or line.isspace():
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise TritonParseError(f"not Prometheus text: line {line[:120]!r}")
        name, label_text, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            raise TritonParseError(f"not a number in line {line[:120]!r}") from None
        yield name, (_labels(label_text, line) if label_text else {}), value


def parse_triton_metrics(text: str, models: frozenset[str]) -> PoolValues:
    """Parse one replica's /metrics text, keeping only the pool's spec ``models``."""
    values = PoolValues()
    for name, labels, value in samples(text):
        triton_model = labels.get("model")
        if triton_model is None or math.isnan(value):
            continue
        spec_model, _, suffix = triton_model.partition("_")
        step = STEP_OF_SUFFIX.get(suffix)
        if step is None or spec_model not in models:
            continue
        if name in _CORE:
            key, scale = _CORE[name]
            _add(values.steps[(spec_model, step)], key, value * scale)
        elif suffix in _ENGINE_SUFFIXES and name in _TOKENS:
            _add(values.engine[spec_model], _TOKENS[name], value)
        elif suffix in _ENGINE_SUFFIXES:
            for (family_name, category, wanted), key in _ENGINE.items():
                if name == family_name and labels.get(category) == wanted:
                    _add(values.engine[spec_model], key, value)
    return values
