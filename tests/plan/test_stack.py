"""Stack plans: KV budgets by construction, fit checks, engine config.json of two TensorRT-LLM versions, commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.cli import main as cli_main
from generator.plan import plan_stack
from generator.plan.catalogs import GIB, MIB, load_catalogs
from generator.plan.facts import read_engine_dir
from generator.plan.plan import check_fits, kv_token_budgets
from generator.spec import ModelFacts, parse_spec
from tests.support import paths

MODELS = paths.MODELS
ENGINES = MODELS / "engines"
CAT = load_catalogs()


def _spec(models: str, pools: str, gpu: str = "b200", triton: str = "26.07", extra: str = "") -> str:
    return f"""
apiVersion: tritonstack/v1
name: test
target: {{triton: "{triton}", gpu: {gpu}, gpus_per_node: 8{extra}}}
models:
{models}
pools:
{pools}
"""


LLAMA8_FP8 = f"""
  - name: llama8
    engine_dir: /node/engines/llama8
    checkpoint_dir: {MODELS / 'llama-3.1-8b-instruct-fp8'}
    tokenizer_dir: /node/tok
    precision: fp8
    max_batch_size: 64
    max_input_len: 8192
    max_output_len: 2048
    max_num_tokens: 8192
"""


def test_engine_config_of_trtllm_0_19() -> None:
    engine = read_engine_dir(ENGINES / "llama-3.1-8b-fp8-trtllm-0.19.0")
    assert engine.trtllm_version == "0.19.0"
    assert (engine.max_batch_size, engine.max_input_len, engine.max_seq_len, engine.max_num_tokens) == (64, 4096, 8192, 8192)
    assert (engine.tensor_parallel, engine.pipeline_parallel) == (1, 1)
    assert engine.paged_kv_cache and engine.paged_context_fmha and engine.fp8_context_fmha
    assert engine.quantization.quant_algo == "FP8" and engine.quantization.kv_cache_quant_algo == "FP8"
    assert engine.model.head_dim == 128 and engine.model.num_layers == 32 and engine.gemm_plugin == "fp8"


def test_engine_config_of_trtllm_1_1() -> None:
    engine = read_engine_dir(ENGINES / "llama-3.3-70b-nvfp4-tp2-trtllm-1.1.0")
    assert engine.trtllm_version == "1.1.0"
    assert (engine.tensor_parallel, engine.max_batch_size, engine.max_seq_len) == (2, 128, 16384)
    assert engine.quantization.quant_algo == "NVFP4" and engine.quantization.group_size == 16
    assert engine.paged_kv_cache  # from build_config.kv_cache_type; this version has no plugin switch
    assert engine.model.num_layers == 80


def test_single_model_budget_is_hand_computed() -> None:
    stack = parse_spec(_spec(LLAMA8_FP8, "  - {name: chat, models: [llama8]}"))
    plan = plan_stack(stack, CAT)
    model = plan.models[0]
    c = CAT.constants
    capacity = 183359 * MIB
    weights = (32 * (4096 * 4096 * 2 + 2 * 4096 * 1024) + 32 * 3 * 4096 * 14336) + (2 * 128256 * 4096 + 2 * 4096 * 32 + 4096) * 2
    activations = 8192 * (10 * 4096 + 3 * 14336) * 2 + 64 * 128256 * 4
    overhead = c.runtime_overhead_gib * GIB
    per_token = 2 * 32 * 8 * 128  # FP8 KV (from hf_quant_config.json)
    share = int((capacity - weights - activations - overhead) * c.kv_share_of_free // per_token)
    # The engine can hold at most max_batch_size x max_seq_len tokens (reuse is off: no headroom).
    budget = min(share, 64 * (8192 + 2048))
    assert budget == 655360 < share
    assert model.weight_bytes_per_gpu == weights
    assert model.kv_cache_dtype == "fp8"
    assert model.kv_token_budget == budget
    assert model.max_concurrent_sequences == budget * per_token // (per_token * 10240)
    assert model.decode_batch == 64
    # Decode ceiling at batch 1: every weight but the embedding table, plus one sequence's KV at the
    # mean context (8192 + 1024 tokens), over 80% of 7.67 TB/s.
    read = weights - 128256 * 4096 * 2 + per_token * (8192 + 1024)
    assert model.decode_tokens_per_s_per_sequence == pytest.approx(7.67e12 * 0.8 / read)
    assert kv_token_budgets(stack, catalogs=CAT) == {"llama8": budget}
    assert check_fits(stack, catalogs=CAT) == []
    gpu = plan.gpus[0]
    assert gpu.kv_bytes == budget * per_token
    assert gpu.free_bytes == pytest.approx(capacity - weights - activations - overhead - budget * per_token)


def test_co_located_models_share_by_construction() -> None:
    second = LLAMA8_FP8.replace("name: llama8", "name: other").replace("max_batch_size: 64", "max_batch_size: 16")
    fixed = LLAMA8_FP8.replace("name: llama8", "name: pinned") + "    kv_cache: {max_tokens: 100000}\n"
    stack = parse_spec(_spec(LLAMA8_FP8 + second + fixed, "  - {name: chat, models: [llama8, other, pinned]}"))
    plan = plan_stack(stack, CAT)
    budgets = {m.name: m.kv_token_budget for m in plan.models}
    assert budgets["pinned"] == 100000
    # The flexible models split the rest 64:16 (same sequence lengths).
    assert budgets["llama8"] / budgets["other"] == pytest.approx(4, rel=1e-4)
    gpu = plan.gpus[0]
    assert gpu.models == ["llama8", "other", "pinned"]
    assert gpu.free_bytes > 0 and plan.problems == []


def test_stack_that_does_not_fit_says_by_how_much() -> None:
    models = f"""
  - name: big
    engine_dir: /node/engines/big
    checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct'}
    tokenizer_dir: /node/tok
    precision: bf16
"""
    stack = parse_spec(_spec(models, "  - {name: chat, models: [big]}", gpu="h100", triton="25.12"))
    problems = check_fits(stack, catalogs=CAT)
    assert len(problems) == 1
    assert "exceed the GPU by" in problems[0] and "raise tensor_parallel" in problems[0]
    over = float(problems[0].split("exceed the GPU by ")[1].split(" GiB")[0])
    assert 52 < over < 58  # 131.4 GiB weights + overhead on a 79.6 GiB H100
    assert "big" not in kv_token_budgets(stack, catalogs=CAT)


def test_max_tokens_over_memory_is_a_problem() -> None:
    pinned = LLAMA8_FP8 + "    kv_cache: {max_tokens: 5000000}\n"
    problems = check_fits(parse_spec(_spec(pinned, "  - {name: chat, models: [llama8]}")), catalogs=CAT)
    assert any("kv_cache.max_tokens" in p and "over by" in p for p in problems)


def test_reference_engine_models_are_not_gpu_planned() -> None:
    stack = parse_spec(
        _spec("  - {name: tiny, reference_engine: {}, tokenizer_dir: tok}", "  - {name: chat, models: [tiny]}")
    )
    plan = plan_stack(stack, CAT)
    assert plan.gpus == [] and plan.problems == []
    assert plan.models[0].engine.startswith("reference engine (CPU")
    assert kv_token_budgets(stack, catalogs=CAT) == {}


def test_spec_facts_are_used_when_no_files_exist() -> None:
    """The lead adds `facts:` to Model; until then the planner reads it from the model object if present."""
    stack = parse_spec(
        _spec(
            "  - {name: m, engine_dir: /nowhere, tokenizer_dir: /nowhere, precision: fp8}",
            "  - {name: chat, models: [m]}",
        )
    )
    assert plan_stack(stack, CAT).models[0].kv_token_budget is None  # no facts: not planned
    facts = ModelFacts(
        num_layers=32, hidden_size=4096, num_attention_heads=32, num_kv_heads=8, head_dim=128,
        vocab_size=128256, intermediate_size=14336,
    )
    with_facts = stack.model_copy(update={"models": [stack.models[0].model_copy(update={"facts": facts})]})
    model = plan_stack(with_facts, CAT).models[0]
    assert model.facts_source == "spec facts" and model.params_total == 8_030_261_248
    assert model.kv_token_budget and model.kv_token_budget > 0


def test_gb10_reserves_host_memory() -> None:
    stack = parse_spec(_spec(LLAMA8_FP8, "  - {name: chat, models: [llama8]}", gpu="gb10"))
    plan = plan_stack(stack, CAT)
    assert plan.gpus[0].capacity_bytes == 122070 * MIB - 12 * GIB
    assert any("unified" in n for n in plan.notes)


def test_cost_per_million_tokens() -> None:
    stack = parse_spec(_spec(LLAMA8_FP8, "  - {name: chat, models: [llama8]}", extra=", price_per_gpu_hour: 6.0"))
    model = plan_stack(stack, CAT).models[0]
    assert model.usd_per_million_output_tokens == pytest.approx(6.0 / (model.decode_tokens_per_s_aggregate * 3600) * 1e6)


def test_plan_command_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "stack.yaml"
    spec.write_text(_spec(LLAMA8_FP8, "  - {name: chat, models: [llama8]}"), encoding="utf-8")
    assert cli_main(["plan", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "llama8" in text and "GPUs (one pool replica each)" in text and "headroom" in text
    assert cli_main(["plan", str(spec), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"][0]["kv_token_budget"] > 0 and data["gpus"][0]["headroom"] > 0
    spec.write_text("apiVersion: tritonstack/v1\nname: x\n", encoding="utf-8")
    assert cli_main(["plan", str(spec)]) == 1
    assert "error:" in capsys.readouterr().err
