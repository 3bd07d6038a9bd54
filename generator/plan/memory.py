"""Memory and bandwidth arithmetic: parameters, weight bytes, KV bytes, decode ceilings.

Pure functions of :class:`ModelFacts` and catalog entries. Every number the plan prints comes from
here, so the formulas are in one place and the tests compute the same cases by hand.

Conventions: bytes are exact integers or floats of bytes; "per rank" means one GPU of a TP×PP
group. Formulas:

* KV bytes per token per rank = 2 (K and V) × ceil(attention layers / PP) × max(1, ceil(kv_heads / TP))
  × head_dim × bytes per element. Sliding-window layers hold at most ``window`` tokens per sequence.
* NVFP4 costs 4.5 bits per element (E2M1 + one FP8 scale per 16), MXFP4 4.25 (one E8M0 per 32).
* Modules a checkpoint leaves unquantized (``exclude_modules``; embeddings and MoE routers always)
  are counted in the base precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from generator.plan.catalogs import KvFormat, NumberFormat
from generator.plan.facts import ceil_div, kv_heads_per_rank
from generator.spec import ModelFacts, QuantFacts

__all__ = [
    "ParamCounts",
    "WeightBytes",
    "KvBytes",
    "param_counts",
    "format_for_quant_algo",
    "weight_bytes",
    "kv_bytes_per_token",
    "expected_active_experts",
    "decode_bytes_per_step",
    "activation_bytes",
]

# Module kinds and, for exclusion matching, the module names a HF Llama/Qwen/GPT-OSS checkpoint uses
# for them in layer {i} (with the share of the kind's parameters each name holds).
_ATTENTION_NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_MLP_NAMES = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_EXPERT_NAMES = ("mlp.experts.0.gate_proj", "mlp.experts.0.up_proj", "mlp.experts.0.down_proj")

_QUANT_ALGO_FORMATS = {
    "FP8": "fp8",
    "FP8_BLOCK_SCALES": "fp8",
    "FP8_PER_CHANNEL_PER_TOKEN": "fp8",
    "NVFP4": "nvfp4",
    "MXFP4": "mxfp4",
    "W4A16_MXFP4": "mxfp4",
    "W4A8_MXFP4_FP8": "mxfp4",
    "MXFP8": "mxfp8",
    "W4A16_AWQ": "int4_awq",
    "W4A8_AWQ": "int4_awq",
    "AWQ": "int4_awq",
    "W8A8_SQ_PER_CHANNEL": "int8_sq",
    "W8A8_SQ_PER_TENSOR_PLUGIN": "int8_sq",
    "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN": "int8_sq",
    "W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN": "int8_sq",
    "W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN": "int8_sq",
    "INT8": "int8_sq",
}


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by module kind."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    attention: int
    mlp: int  # dense MLPs and shared experts
    experts: int  # all routed experts
    router: int
    other: int  # norms, biases-free extras, Mamba mixers

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.attention + self.mlp + self.experts + self.router + self.other


def param_counts(facts: ModelFacts) -> ParamCounts:
    h = facts.hidden_size
    q_width = facts.num_attention_heads * facts.head_dim
    kv_width = facts.num_kv_heads * facts.head_dim
    attention_per_layer = h * q_width + 2 * h * kv_width + q_width * h
    matrices = 3 if facts.gated_mlp else 2
    if facts.mlp_params is not None:
        mlp = facts.mlp_params
    else:
        mlp = facts.n_dense_mlp_layers * matrices * h * facts.intermediate_size
    mlp += facts.n_moe_layers * matrices * h * facts.shared_expert_intermediate_size
    experts = facts.n_moe_layers * facts.num_experts * matrices * h * facts.moe_intermediate_size
    router = facts.n_moe_layers * h * facts.num_experts
    embedding = facts.vocab_size * h
    norms = 2 * h * facts.num_layers + h
    return ParamCounts(
        embedding=embedding,
        lm_head=0 if facts.tie_word_embeddings else embedding,
        attention=facts.n_attention_layers * attention_per_layer,
        mlp=mlp,
        experts=experts,
        router=router,
        other=norms + facts.extra_params,
    )


def active_params_per_token(facts: ModelFacts, counts: ParamCounts) -> int:
    """Parameters one decoded token multiplies through (MoE: only the top-k experts).

    The input embedding is a row lookup, so it is not counted; a tied lm_head is (it is the
    embedding matrix used as the output projection). Matches published "active" figures (GPT-OSS-120B
    5.1 B, Qwen3-30B-A3B 3.3 B counted with embeddings).
    """
    experts = counts.experts * facts.experts_per_token // facts.num_experts if facts.is_moe else 0
    head = counts.lm_head if counts.lm_head else counts.embedding
    return counts.attention + counts.mlp + experts + counts.router + counts.other + head


def format_for_quant_algo(quant_algo: str | None) -> str | None:
    """Catalog key for a ModelOpt / TensorRT-LLM ``quant_algo``; None when unknown or unquantized."""
    if quant_algo is None:
        return None
    return _QUANT_ALGO_FORMATS.get(quant_algo.upper())


def _matches(patterns: list[str], name: str) -> bool:
    """ModelOpt patterns are fnmatch-style; a pattern naming a parent module covers its children."""
    parts = name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def _excluded_share(patterns: list[str], names: tuple[str, ...], layers: int) -> float:
    """Share of a module kind (summed over layers) that exclusion patterns keep unquantized."""
    if not patterns or not layers:
        return 0.0
    hits = sum(
        1 for layer in range(layers) for name in names if _matches(patterns, f"model.layers.{layer}.{name}")
    )
    return hits / (layers * len(names))


@dataclass(frozen=True)
class WeightBytes:
    """Weight storage by module kind, and which format each kind is stored in."""

    by_kind: dict[str, float]
    quantized_params: int
    unquantized_params: int
    format_key: str
    base_key: str

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())


def weight_bytes(
    facts: ModelFacts,
    fmt: NumberFormat,
    base: NumberFormat,
    quant: QuantFacts | None,
) -> WeightBytes:
    """Bytes of all weights when stored in ``fmt`` (with ``base`` for the modules it leaves alone)."""
    counts = param_counts(facts)
    patterns = list(quant.exclude_modules) if quant is not None else []
    kinds = {
        "embedding": (counts.embedding, 0.0),
        "lm_head": (counts.lm_head, 1.0 if _matches(patterns, "lm_head") else 0.0),
        "attention": (counts.attention, _excluded_share(patterns, _ATTENTION_NAMES, facts.n_attention_layers)),
        "mlp": (counts.mlp, _excluded_share(patterns, _MLP_NAMES, facts.n_dense_mlp_layers or facts.n_moe_layers)),
        "experts": (counts.experts, _excluded_share(patterns, _EXPERT_NAMES, facts.n_moe_layers)),
        "router": (counts.router, 1.0),
        "other": (counts.other, 1.0),
    }
    by_kind: dict[str, float] = {}
    quantized = unquantized = 0
    for kind, (params, excluded_share) in kinds.items():
        if kind in fmt.quantized_modules and kind != "embedding":
            kept = round(params * excluded_share)
            q = params - kept
        else:
            kept, q = params, 0
        quantized += q
        unquantized += kept
        by_kind[kind] = q * fmt.bytes_per_element + kept * base.bytes_per_element
    return WeightBytes(
        by_kind=by_kind, quantized_params=quantized, unquantized_params=unquantized, format_key=fmt.key, base_key=base.key
    )


def weight_bytes_per_rank(weights: WeightBytes, tensor_parallel: int, pipeline_parallel: int) -> float:
    """Largest share one GPU holds: layers split over PP stages, everything split over TP.

    The embedding sits on the first stage and lm_head on the last, so with PP > 1 a rank holds the
    larger of the two, not both.
    """
    layer_bytes = sum(v for k, v in weights.by_kind.items() if k not in {"embedding", "lm_head"})
    edge = weights.by_kind["embedding"] + weights.by_kind["lm_head"]
    if pipeline_parallel > 1:
        edge = max(weights.by_kind["embedding"], weights.by_kind["lm_head"])
    return (layer_bytes / pipeline_parallel + edge) / tensor_parallel


@dataclass(frozen=True)
class KvBytes:
    """KV cache cost of one rank."""

    full_per_token: float  # layers whose cache grows with every token
    sliding_per_token: float  # sliding-window layers, up to their window
    window: int | None
    bytes_per_element: float = 2.0

    @property
    def per_token_all_layers(self) -> float:
        """Upper bound per token (what a token budget must reserve to fit by construction)."""
        return self.full_per_token + self.sliding_per_token

    def per_sequence(self, tokens: int) -> float:
        window_tokens = min(tokens, self.window) if self.window else tokens
        return self.full_per_token * tokens + self.sliding_per_token * window_tokens


def kv_bytes_per_token(facts: ModelFacts, kv: KvFormat, tensor_parallel: int, pipeline_parallel: int) -> KvBytes:
    per_layer = 2 * kv_heads_per_rank(facts.num_kv_heads, tensor_parallel) * facts.head_dim * kv.bytes_per_element
    sliding_layers = ceil_div(facts.sliding_window_layers, pipeline_parallel)
    full_layers = ceil_div(facts.n_attention_layers - facts.sliding_window_layers, pipeline_parallel)
    return KvBytes(
        full_per_token=full_layers * per_layer,
        sliding_per_token=sliding_layers * per_layer,
        window=facts.sliding_window if facts.sliding_window_layers else None,
        bytes_per_element=kv.bytes_per_element,
    )


def expected_active_experts(num_experts: int, experts_per_token: int, batch: int) -> float:
    """Distinct experts a decode step of ``batch`` tokens touches (uniform routing, expectation)."""
    if not num_experts:
        return 0.0
    return num_experts * (1 - (1 - experts_per_token / num_experts) ** batch)


def decode_bytes_per_step(
    facts: ModelFacts,
    weights: WeightBytes,
    kv: KvBytes,
    batch: int,
    context_tokens: int,
    tensor_parallel: int,
    pipeline_parallel: int,
) -> float:
    """Bytes one GPU reads in one decode step of ``batch`` sequences at ``context_tokens`` each.

    Weights: everything but the embedding table (a row lookup), and for MoE only the experts the batch
    touches. KV: every cached token of every sequence. PP stages run one after the other for a
    token, so a step costs the sum over stages (= the rank's share × PP).
    """
    w = dict(weights.by_kind)
    w.pop("embedding")
    if facts.is_moe:
        share = expected_active_experts(facts.num_experts, facts.experts_per_token, batch) / facts.num_experts
        w["experts"] *= share
    if facts.tie_word_embeddings:
        w["lm_head"] = weights.by_kind["embedding"]
    weight_read = sum(w.values()) / tensor_parallel
    kv_read = batch * kv.per_sequence(context_tokens) * pipeline_parallel
    return weight_read + kv_read


def activation_bytes(facts: ModelFacts, max_num_tokens: int, max_batch_size: int, tensor_parallel: int) -> float:
    """Estimate of the activation memory a TensorRT-LLM engine reserves per rank.

    TensorRT-LLM sizes activations at build time from max_num_tokens
    (https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/reference/memory.md).
    Estimate: per scheduled token, ~10 hidden-sized and 3 MLP-width BF16 buffers (attention QKV/output,
    residuals, gate/up/down), plus FP32 logits for the last token of each sequence. An estimate, shown
    as such in the plan.
    """
    width = max(facts.intermediate_size, facts.moe_intermediate_size * max(facts.experts_per_token, 1))
    per_token = (10 * facts.hidden_size + 3 * math.ceil(width / tensor_parallel)) * 2
    logits = max_batch_size * math.ceil(facts.vocab_size / tensor_parallel) * 4
    return max_num_tokens * per_token + logits
