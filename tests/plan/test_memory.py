"""Planner arithmetic against hand-computed cases (Llama-3.1-8B, Llama-3.3-70B, Qwen3-30B-A3B, GPT-OSS-120B).

The configs in tests/fixtures/models/ are the published config.json / hf_quant_config.json values.
Every expected number below is written out from the architecture, not taken from the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.plan.catalogs import load_catalogs, version_key
from generator.plan.facts import FactsError, hf_config_facts, read_checkpoint_dir
from generator.plan.memory import (
    active_params_per_token,
    expected_active_experts,
    kv_bytes_per_token,
    param_counts,
    weight_bytes,
    weight_bytes_per_rank,
)
from generator.spec import ModelFacts, QuantFacts
from tests.support import paths

MODELS = paths.MODELS
CAT = load_catalogs()
BF16, FP8, NVFP4, MXFP4 = (CAT.formats[k] for k in ("bf16", "fp8", "nvfp4", "mxfp4"))

# Llama-3.1-8B: 32 layers, hidden 4096, 32 heads, 8 KV heads, head_dim 128, FFN 14336, vocab 128256.
L8_ATTN = 32 * (4096 * 4096 * 2 + 2 * 4096 * 1024)
L8_MLP = 32 * 3 * 4096 * 14336
L8_EMBED = 128256 * 4096
L8_NORMS = 2 * 4096 * 32 + 4096
# Llama-3.3-70B: 80 layers, hidden 8192, 64 heads, 8 KV heads, FFN 28672.
L70_ATTN = 80 * (8192 * 8192 * 2 + 2 * 8192 * 1024)
L70_MLP = 80 * 3 * 8192 * 28672
L70_EMBED = 128256 * 8192
L70_NORMS = 2 * 8192 * 80 + 8192
# Qwen3-30B-A3B: 48 layers, hidden 2048, 32 heads x 128, 4 KV heads, 128 experts (top-8) of width 768.
Q_ATTN = 48 * (2048 * 4096 * 2 + 2 * 2048 * 512)
Q_EXPERTS = 48 * 128 * 3 * 2048 * 768
Q_ROUTER = 48 * 2048 * 128
Q_EMBED = 151936 * 2048
Q_NORMS = 2 * 2048 * 48 + 2048


def test_llama_8b_parameters_and_bf16_weights() -> None:
    facts = read_checkpoint_dir(MODELS / "llama-3.1-8b-instruct")
    total = L8_ATTN + L8_MLP + 2 * L8_EMBED + L8_NORMS
    assert total == 8_030_261_248  # the model card's 8.03 B
    assert param_counts(facts).total == total
    assert weight_bytes(facts, BF16, BF16, None).total == total * 2


def test_llama_8b_fp8_checkpoint_keeps_lm_head_and_embedding_in_bf16() -> None:
    facts = read_checkpoint_dir(MODELS / "llama-3.1-8b-instruct-fp8")
    assert facts.quantization is not None and facts.quantization.quant_algo == "FP8"
    assert facts.quantization.kv_cache_quant_algo == "FP8"
    weights = weight_bytes(facts, FP8, BF16, facts.quantization)
    expected = (L8_ATTN + L8_MLP) * 1 + (2 * L8_EMBED + L8_NORMS) * 2
    assert weights.total == expected
    assert weights.unquantized_params == 2 * L8_EMBED + L8_NORMS


def test_llama_8b_kv_bytes_per_token() -> None:
    facts = read_checkpoint_dir(MODELS / "llama-3.1-8b-instruct")
    # 2 (K,V) x 32 layers x 8 heads x 128 x bytes
    assert kv_bytes_per_token(facts, CAT.kv_formats["bf16"], 1, 1).per_token_all_layers == 2 * 32 * 8 * 128 * 2
    assert kv_bytes_per_token(facts, CAT.kv_formats["fp8"], 1, 1).per_token_all_layers == 64 * 1024
    # NVFP4 KV: 4.5 bits per element.
    assert kv_bytes_per_token(facts, CAT.kv_formats["nvfp4"], 1, 1).per_token_all_layers == 2 * 32 * 8 * 128 * 0.5625


def test_llama_70b_nvfp4_weights_count_block_scales_and_bf16_edges() -> None:
    facts = read_checkpoint_dir(MODELS / "llama-3.3-70b-instruct-fp4")
    assert facts.quantization is not None and facts.quantization.group_size == 16
    assert param_counts(facts).total == L70_ATTN + L70_MLP + 2 * L70_EMBED + L70_NORMS == 70_553_706_496
    weights = weight_bytes(facts, NVFP4, BF16, facts.quantization)
    # (16 x 4 bits + one 8-bit scale) / 16 = 4.5 bits = 0.5625 bytes per quantized weight
    expected = (L70_ATTN + L70_MLP) * 0.5625 + (2 * L70_EMBED + L70_NORMS) * 2
    assert weights.total == pytest.approx(expected)
    assert 42.6e9 < weights.total < 42.8e9
    # TP2: every rank holds half of everything.
    assert weight_bytes_per_rank(weights, 2, 1) == pytest.approx(expected / 2)
    # PP2: half the layers, and only the larger of embedding / lm_head.
    layers = (L70_ATTN + L70_MLP) * 0.5625 + L70_NORMS * 2
    assert weight_bytes_per_rank(weights, 1, 2) == pytest.approx(layers / 2 + L70_EMBED * 2)


def test_llama_70b_bf16_and_fp8_kv_under_tp() -> None:
    facts = read_checkpoint_dir(MODELS / "llama-3.3-70b-instruct")
    assert weight_bytes(facts, BF16, BF16, None).total == 70_553_706_496 * 2
    # 320 KiB per token in BF16; FP8 at TP2 halves dtype and heads: 80 x 2 x 4 x 128 x 1
    assert kv_bytes_per_token(facts, CAT.kv_formats["bf16"], 1, 1).per_token_all_layers == 320 * 1024
    assert kv_bytes_per_token(facts, CAT.kv_formats["fp8"], 2, 1).per_token_all_layers == 80 * 2 * 4 * 128
    # TP16 > 8 KV heads: heads are replicated, one per rank.
    assert kv_bytes_per_token(facts, CAT.kv_formats["fp8"], 16, 1).per_token_all_layers == 80 * 2 * 1 * 128
    # PP4 splits the layers.
    assert kv_bytes_per_token(facts, CAT.kv_formats["fp8"], 1, 4).per_token_all_layers == 20 * 2 * 8 * 128


def test_qwen3_moe_total_and_active_parameters() -> None:
    facts = read_checkpoint_dir(MODELS / "qwen3-30b-a3b")
    counts = param_counts(facts)
    assert counts.experts == Q_EXPERTS
    assert counts.total == Q_ATTN + Q_EXPERTS + Q_ROUTER + 2 * Q_EMBED + Q_NORMS == 30_532_110_336
    # Active per decoded token: 8 of 128 experts, no input-embedding lookup cost.
    active = Q_ATTN + Q_EXPERTS * 8 // 128 + Q_ROUTER + Q_NORMS + Q_EMBED
    assert active_params_per_token(facts, counts) == active
    assert kv_bytes_per_token(facts, CAT.kv_formats["bf16"], 1, 1).per_token_all_layers == 96 * 1024


def test_qwen3_moe_nvfp4_excludes_routers_and_lm_head() -> None:
    facts = read_checkpoint_dir(MODELS / "qwen3-30b-a3b-fp4")
    assert facts.quantization is not None
    assert facts.quantization.exclude_modules == ["lm_head", "model.layers.*.mlp.gate"]
    weights = weight_bytes(facts, NVFP4, BF16, facts.quantization)
    expected = (Q_ATTN + Q_EXPERTS) * 0.5625 + (Q_ROUTER + 2 * Q_EMBED + Q_NORMS) * 2
    assert weights.total == pytest.approx(expected)


def test_exclusion_patterns_of_some_layers_keep_that_share_unquantized() -> None:
    facts = read_checkpoint_dir(MODELS / "llama-3.1-8b-instruct")
    quant = QuantFacts(quant_algo="FP8", exclude_modules=["model.layers.0.*", "model.layers.31.*"])
    weights = weight_bytes(facts, FP8, BF16, quant)
    layer = (L8_ATTN + L8_MLP) // 32
    expected = 30 * layer * 1 + 2 * layer * 2 + (2 * L8_EMBED + L8_NORMS) * 2
    assert weights.total == expected


def test_gpt_oss_mxfp4_sliding_window_and_active_parameters() -> None:
    facts = read_checkpoint_dir(MODELS / "gpt-oss-120b")
    assert (facts.num_layers, facts.n_attention_layers, facts.sliding_window_layers, facts.sliding_window) == (
        36,
        36,
        18,
        128,
    )
    assert facts.quantization is not None and facts.quantization.quant_algo == "MXFP4"
    counts = param_counts(facts)
    experts = 36 * 128 * 3 * 2880 * 2880
    attention = 36 * (2880 * 4096 * 2 + 2 * 2880 * 512)
    assert counts.experts == experts
    assert 116.7e9 < counts.total < 116.9e9  # 116.8 B on the model card (biases not counted)
    assert 5.0e9 < active_params_per_token(facts, counts) < 5.2e9  # 5.1 B active
    weights = weight_bytes(facts, MXFP4, BF16, facts.quantization)
    # Only the experts are MXFP4 (4.25 bits); attention, router, embeddings and lm_head stay BF16.
    assert weights.by_kind["experts"] == experts * 4.25 / 8
    assert weights.by_kind["attention"] == attention * 2
    kv = kv_bytes_per_token(facts, CAT.kv_formats["bf16"], 1, 1)
    per_layer = 2 * 8 * 64 * 2
    assert (kv.full_per_token, kv.sliding_per_token) == (18 * per_layer, 18 * per_layer)
    # At 8192 tokens the sliding layers hold only their 128-token window.
    assert kv.per_sequence(8192) == 18 * per_layer * 8192 + 18 * per_layer * 128


def test_expected_active_experts() -> None:
    assert expected_active_experts(128, 8, 1) == pytest.approx(8)
    assert expected_active_experts(128, 8, 256) == pytest.approx(128 * (1 - (120 / 128) ** 256))
    assert expected_active_experts(0, 0, 64) == 0


def test_layers_without_attention_from_block_configs() -> None:
    """A NAS-pruned (DeciLM-style) config: two of four blocks skip attention, one FFN is a no-op."""
    cfg = {
        "architectures": ["DeciLMForCausalLM"],
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "num_hidden_layers": 4,
        "vocab_size": 1000,
        "block_configs": [
            {"attention": {"n_heads_in_group": 8, "no_op": False}, "ffn": {"ffn_mult": 1.5}},
            {"attention": {"no_op": True}, "ffn": {"ffn_mult": 3.0}},
            {"attention": {"replace_with_linear": True}, "ffn": {"no_op": True}},
            {"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mult": 1.5}},
        ],
    }
    facts = hf_config_facts(cfg, "constructed")
    assert facts.n_attention_layers == 2
    assert facts.num_kv_heads == 2  # 16 heads / 8 per group
    # ffn_mult 1.5 -> int(2*1.5*1024/3) = 1024; 3.0 -> 2048 (multiples of 256)
    assert facts.mlp_params == 3 * 1024 * (1024 + 2048 + 1024)
    kv = kv_bytes_per_token(facts, CAT.kv_formats["bf16"], 1, 1)
    assert kv.per_token_all_layers == 2 * 2 * 2 * 64 * 2


def test_hybrid_pattern_counts_only_attention_layers() -> None:
    cfg = {
        "hidden_size": 1024,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "num_hidden_layers": 6,
        "vocab_size": 1000,
        "intermediate_size": 2048,
        "hybrid_override_pattern": "M-M*--",
        "mamba_num_heads": 16,
        "mamba_head_dim": 64,
        "ssm_state_size": 128,
        "n_groups": 2,
        "conv_kernel": 4,
    }
    facts = hf_config_facts(cfg, "constructed")
    assert (facts.num_layers, facts.n_attention_layers, facts.n_dense_mlp_layers) == (6, 1, 3)
    assert kv_bytes_per_token(facts, CAT.kv_formats["bf16"], 1, 1).per_token_all_layers == 2 * 2 * 128 * 2
    assert facts.extra_params > 0


def test_layer_types_with_linear_attention() -> None:
    cfg = {
        "hidden_size": 512,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "num_hidden_layers": 4,
        "vocab_size": 100,
        "intermediate_size": 1024,
        "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    }
    assert hf_config_facts(cfg, "constructed").n_attention_layers == 1


def test_missing_numbers_and_bad_files_are_facts_errors(tmp_path: Path) -> None:
    with pytest.raises(FactsError, match="missing vocab_size"):
        hf_config_facts({"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1}, "x/config.json")
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FactsError, match=r"config.json:1: not valid JSON"):
        read_checkpoint_dir(tmp_path)
    with pytest.raises(FactsError, match="no such file"):
        read_checkpoint_dir(tmp_path / "absent")
    with pytest.raises(FactsError, match="kv_lora_rank"):
        hf_config_facts({"kv_lora_rank": 512}, "deepseek")


def test_model_facts_are_closed_and_consistent() -> None:
    with pytest.raises(ValueError, match="extra"):
        ModelFacts(num_layers=1, hidden_size=8, num_attention_heads=2, num_kv_heads=2, head_dim=4, vocab_size=10, x=1)
    with pytest.raises(ValueError, match="experts_per_token"):
        ModelFacts(
            num_layers=1, hidden_size=8, num_attention_heads=2, num_kv_heads=2, head_dim=4, vocab_size=10,
            num_experts=4, moe_intermediate_size=8,
        )


def test_catalogs_have_every_gpu_and_format_with_sources() -> None:
    for key in ("h100", "h200", "b200", "b300", "gb200", "gb300", "gb10", "rtx-pro-6000"):
        gpu = CAT.gpus[key]
        assert gpu.sources and gpu.memory_usable_mib > 0 and gpu.bandwidth_tb_s > 0
    assert CAT.gpus["gb10"].unified_memory and CAT.gpus["gb10"].sm_arch == "sm_121"
    assert not CAT.gpus["h100"].has_fp4 and CAT.gpus["b200"].has_fp4
    assert CAT.formats["nvfp4"].bits_per_element == (16 * 4 + 8) / 16
    assert CAT.formats["mxfp4"].bits_per_element == (32 * 4 + 8) / 32
    assert CAT.formats["mxfp8"].bits_per_element == (32 * 8 + 8) / 32
    assert version_key("1.0.3.2510") == (1, 0, 3, 2510) and version_key("0.17.0.post1") == (0, 17, 0)
