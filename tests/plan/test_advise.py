"""tritonstack advise: the sweep, its ranking, the ladder, the plot, and a stack that render accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.cli import main as cli_main
from generator.plan.advise import ModelInput, Sla, Workload, advise, pareto, stack_fragment
from generator.plan.catalogs import load_catalogs
from generator.plan.facts import read_checkpoint_dir
from generator.yamlio import safe_dump
from tests.support import paths

MODELS = paths.MODELS
CAT = load_catalogs()
LLAMA = MODELS / "llama-3.1-8b-instruct"


def _model(path: Path, tokenizer: str = "/node/tok") -> ModelInput:
    return ModelInput(path.name, read_checkpoint_dir(path), str(path), tokenizer)


def _advice(path: Path = LLAMA, **workload: int):  # noqa: ANN202
    load = workload or {"users": 64}
    return advise(
        [_model(path)], Workload(1024, 256, **load), Sla(1.0, 0.05), {"h100": 2.5, "b200": 6.5, "gb10": None}, CAT
    )


def test_ranking_meets_the_sla_and_is_cheapest_first() -> None:
    advice = _advice()
    assert advice.ranked and all(c.meets_sla for c in advice.ranked)
    costs = [c.usd_per_million for c in advice.ranked]
    assert costs == sorted(costs)
    for c in advice.ranked:
        assert c.ttft_s <= 1.0 and c.itl_s <= 0.05
        assert c.gpus == (c.prefill_replicas + c.decode_replicas) * c.tensor_parallel
        # the whole deployment is priced
        assert c.usd_per_million == pytest.approx(c.price_per_gpu_hour * c.gpus / (c.tokens_per_s * 3600) * 1e6)
    assert {c.mode for c in advice.candidates} == {"aggregated", "disaggregated"}
    assert advice.prices["gb10"] == (CAT.gpus["gb10"].assumed_price_per_gpu_hour, True)


def test_no_nvfp4_on_hopper_and_tp_within_a_node() -> None:
    advice = _advice()
    assert not [c for c in advice.candidates if c.gpu == "h100" and c.precision == "nvfp4"]
    assert all(c.tensor_parallel == 1 for c in advice.candidates if c.gpu == "gb10")


def test_pre_quantized_moe_is_served_as_it_is() -> None:
    advice = advise([_model(MODELS / "gpt-oss-120b")], Workload(1024, 256, users=64), Sla(2.0, 0.05),
                    {"h100": 2.5, "b200": 6.5}, CAT)
    assert {c.precision for c in advice.candidates} == {"mxfp4"}
    assert advice.ranked


def test_what_each_change_buys() -> None:
    ladder = _advice().ladder
    steps = [row["step"] for row in ladder]
    assert steps[:4] == ["h100 bf16 aggregated", "h100 fp8 aggregated", "b200 fp8 aggregated", "b200 nvfp4 aggregated"]
    assert "disaggregation" in steps[4]
    assert ladder[1]["cost_vs_previous"] < 1  # FP8 halves the bytes each decode step reads


def test_rate_workload_scales_replicas() -> None:
    low = _advice(rate=1)
    high = _advice(rate=50)
    best_low = min(c.gpus for c in low.ranked if c.gpu == "h100")
    best_high = min(c.gpus for c in high.ranked if c.gpu == "h100")
    assert best_high > best_low


def test_pareto_front_is_not_dominated() -> None:
    candidates = _advice().candidates
    front = pareto(candidates)
    for c in front:
        assert not any(
            o.tokens_per_s_per_gpu > c.tokens_per_s_per_gpu and o.tokens_per_s_per_user > c.tokens_per_s_per_user
            for o in candidates
        )


@pytest.mark.parametrize("mode", ["aggregated", "disaggregated"])
def test_chosen_candidate_renders(tmp_path: Path, mode: str) -> None:
    from generator.pipeline import build

    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    model = _model(LLAMA, str(tokenizer))
    advice = advise([model], Workload(1024, 256, users=64), Sla(1.0, 0.05), {"b200": 6.5}, CAT)
    chosen = next(c for c in advice.ranked if c.mode == mode)
    spec = tmp_path / "stack.yaml"
    spec.write_text(safe_dump(stack_fragment(chosen, model, advice.workload, CAT), sort_keys=False))
    built = build(spec, tmp_path / "out")
    assert any(path.startswith("model_repos/") for path in built.files)


def test_command_json_plot_stack_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot, stack = tmp_path / "pareto.png", tmp_path / "advised.yaml"
    argv = ["advise", "--model", str(LLAMA), "--isl", "1024", "--osl", "256", "--users", "64", "--ttft-ms", "1000",
            "--itl-ms", "50", "--gpu", "h100=2.5", "--gpu", "b200=6.5", "--plot", str(plot), "--write-stack", str(stack)]
    assert cli_main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ranked"] and data["stack"]["target"]["gpu"] == data["ranked"][0]["gpu"]
    assert data["what_each_change_buys"] and "searching" in captured.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and stack.is_file()
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "What each change buys" in text and "$/M out" in text and "Chosen:" in text


def test_impossible_sla_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["advise", "--model", str(LLAMA), "--isl", "1024", "--osl", "256", "--users", "8", "--ttft-ms", "1",
            "--itl-ms", "0.1", "--gpu", "h100=2.5"]
    assert cli_main(argv) == 1
    assert "Nothing meets the SLA" in capsys.readouterr().out
    assert cli_main([*argv[:-1], "h100=cheap"]) == 1
    assert "price must be a number" in capsys.readouterr().err
