"""The model-facts types: a model's architecture numbers and quantization, as the spec can state them.

The spec holds them (``models[].facts``) for when no config file is readable where the generator
runs; the planner's readers in ``generator/plan/facts.py`` build the same types from an engine's or a
checkpoint's ``config.json``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from generator.spec.base import Closed, PositiveInt

__all__ = ["QuantFacts", "ModelFacts"]

NonNegativeInt = Annotated[int, Field(ge=0)]


class QuantFacts(Closed):
    """How a checkpoint or engine is quantized (ModelOpt / TensorRT-LLM vocabulary)."""

    quant_algo: str | None = Field(
        default=None, description="FP8, NVFP4, W4A16_AWQ, MXFP4, W4A16_MXFP4, MXFP8, FP8_BLOCK_SCALES; null = none"
    )
    group_size: PositiveInt | None = Field(default=None, description="Elements per block scale")
    kv_cache_quant_algo: str | None = Field(default=None, description="FP8 or NVFP4; null = model dtype")
    exclude_modules: list[str] = Field(
        default_factory=list, description="Module name patterns kept in higher precision (fnmatch, prefix match)"
    )


class ModelFacts(Closed):
    """Architecture numbers of one model, as published in its config.json / model card."""

    architecture: str | None = Field(default=None, description="e.g. LlamaForCausalLM (informational)")
    num_layers: PositiveInt = Field(description="Decoder layers (blocks), with or without attention")
    hidden_size: PositiveInt
    num_attention_heads: PositiveInt
    num_kv_heads: PositiveInt = Field(description="Key/value heads (GQA); the largest when layers differ")
    head_dim: PositiveInt
    vocab_size: PositiveInt
    intermediate_size: NonNegativeInt = Field(default=0, description="Dense MLP width")
    gated_mlp: bool = Field(default=True, description="Gate+up+down projections (SwiGLU); false: up+down")
    dense_mlp_layers: NonNegativeInt | None = Field(
        default=None, description="Layers with a dense MLP; default: all layers of a dense model, none of a MoE"
    )
    mlp_params: NonNegativeInt | None = Field(
        default=None, description="Total dense-MLP parameters when layers differ (NAS-pruned models)"
    )
    num_experts: NonNegativeInt = Field(default=0, description="Routed experts per MoE layer; 0 = dense model")
    experts_per_token: NonNegativeInt = Field(default=0, description="Experts active per token (top-k)")
    moe_intermediate_size: NonNegativeInt = Field(default=0, description="Width of one expert's MLP")
    shared_expert_intermediate_size: NonNegativeInt = 0
    moe_layers: NonNegativeInt | None = Field(default=None, description="Layers with experts; default all")
    attention_layers: NonNegativeInt | None = Field(
        default=None, description="Layers that keep a KV cache; default all (hybrids and NAS models have fewer)"
    )
    sliding_window: PositiveInt | None = Field(default=None, description="Window of the sliding-window layers")
    sliding_window_layers: NonNegativeInt = Field(default=0, description="How many attention layers slide")
    tie_word_embeddings: bool = Field(default=False, description="lm_head shares the embedding matrix")
    extra_params: NonNegativeInt = Field(
        default=0, description="Parameters the layer formulas do not cover (e.g. Mamba mixers), kept in BF16"
    )
    max_position_embeddings: PositiveInt | None = None
    quantization: QuantFacts | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelFacts:
        if self.attention_layers is not None and self.attention_layers > self.num_layers:
            raise ValueError(f"attention_layers ({self.attention_layers}) exceeds num_layers ({self.num_layers})")
        if self.sliding_window_layers > self.n_attention_layers:
            raise ValueError("sliding_window_layers exceeds the number of attention layers")
        if self.sliding_window_layers and self.sliding_window is None:
            raise ValueError("sliding_window_layers is set but sliding_window is not")
        if self.num_experts and not (0 < self.experts_per_token <= self.num_experts):
            raise ValueError("experts_per_token must be between 1 and num_experts for a MoE model")
        if self.num_experts and not self.moe_intermediate_size:
            raise ValueError("a MoE model (num_experts > 0) needs moe_intermediate_size")
        if self.num_kv_heads > self.num_attention_heads:
            raise ValueError("num_kv_heads exceeds num_attention_heads")
        return self

    @property
    def n_attention_layers(self) -> int:
        return self.num_layers if self.attention_layers is None else self.attention_layers

    @property
    def n_moe_layers(self) -> int:
        if not self.num_experts:
            return 0
        return self.num_layers if self.moe_layers is None else self.moe_layers

    @property
    def n_dense_mlp_layers(self) -> int:
        if self.dense_mlp_layers is not None:
            return self.dense_mlp_layers
        return 0 if self.num_experts else self.num_layers

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0
