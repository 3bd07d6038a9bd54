"""Engine recipes: flags by precision, limits from the spec, and scripts that real bash runs (DRY_RUN=1)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from generator.cli import main as cli_main
from generator.plan.recipes import build_recipes
from generator.spec import parse_spec
from tests.support import paths

MODELS = paths.MODELS


def _stack(model: str, target: str = 'triton: "26.07", gpu: b200') -> object:
    return parse_spec(
        f"apiVersion: tritonstack/v1\nname: t\ntarget: {{{target}}}\nmodels:\n- {model}\n"
        "- {name: tiny, reference_engine: {}, tokenizer_dir: /t}\npools:\n- {name: p, models: [m, tiny]}\n"
    )


def _dry_run(script: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "build.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    env = {**os.environ, "DRY_RUN": "1"}
    done = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def test_nvfp4_engine_recipe_on_blackwell(tmp_path: Path) -> None:
    stack = _stack(
        f"{{name: m, engine_dir: '/node/engines/70b \"nvfp4\"', checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct'}, "
        "tokenizer_dir: /t, precision: nvfp4, tensor_parallel: 2, max_batch_size: 32, max_input_len: 16384, "
        "max_output_len: 4096, max_num_tokens: 16384}"
    )
    recipes = build_recipes(stack, base_dir=Path("/"))
    assert [r.model for r in recipes] == ["m"]  # reference-engine models need no recipe
    lines = _dry_run(recipes[0].script, tmp_path)
    quantize, build = lines[0], lines[1]
    assert "quantize.py" in quantize and "--qformat nvfp4" in quantize and "--kv_cache_dtype fp8" in quantize
    assert "--tp_size 2" in quantize and str(MODELS / "llama-3.3-70b-instruct") in quantize
    assert build.startswith("trtllm-build ")
    for flag in (
        "--gemm_plugin nvfp4", "--use_paged_context_fmha enable", "--use_fp8_context_fmha enable",
        "--max_batch_size 32", "--max_input_len 16384", "--max_seq_len 20480", "--max_num_tokens 16384",
        "--workers 2", "--kv_cache_type paged",
    ):
        assert flag in build
    assert '70b\\ \\"nvfp4\\"' in build  # the odd engine path survives quoting
    assert "EXPECTED_TRTLLM=1.2.1" in recipes[0].script


def test_bf16_on_hopper_has_no_fp8_flags(tmp_path: Path) -> None:
    stack = _stack(
        f"{{name: m, engine_dir: /e, checkpoint_dir: {MODELS / 'llama-3.1-8b-instruct'}, tokenizer_dir: /t, precision: bf16}}",
        'triton: "25.12", gpu: h100',
    )
    build = _dry_run(build_recipes(stack, base_dir=Path("/"))[0].script, tmp_path)
    assert "--qformat full_prec" in build[0] and "--kv_cache_dtype" not in build[0]
    assert "--gemm_plugin auto" in build[1] and "fp8_context_fmha" not in build[1]
    assert "--max_num_tokens 8192" in build[1]


def test_published_quantized_checkpoint_is_used_as_it_is(tmp_path: Path) -> None:
    """hf_quant_config.json in the wanted format: convert it, never quantize it again (issue 15)."""
    checkpoint = MODELS / "llama-3.1-8b-instruct-fp8"
    stack = _stack(f"{{name: m, engine_dir: /e, checkpoint_dir: {checkpoint}, tokenizer_dir: /t, precision: fp8}}")
    script = build_recipes(stack, base_dir=Path("/"))[0].script
    lines = _dry_run(script, tmp_path)
    assert "quantize.py" not in script and "hf_ptq.py" not in script
    assert "convert_checkpoint.py" in lines[0] and str(checkpoint) in lines[0] and "--tp_size 1" in lines[0]
    assert lines[1].startswith("trtllm-build ") and "--gemm_plugin fp8" in lines[1]


def test_quantized_checkpoint_in_another_format_asks_for_the_bf16_original() -> None:
    stack = _stack(
        f"{{name: m, engine_dir: /e, checkpoint_dir: {MODELS / 'llama-3.1-8b-instruct-fp8'}, tokenizer_dir: /t, precision: nvfp4}}"
    )
    script = build_recipes(stack, base_dir=Path("/"))[0].script
    assert 'SOURCE_CHECKPOINT="${SOURCE_CHECKPOINT:-/path/to/bf16-hf-checkpoint}"' in script
    assert "already quantized" in script


def test_script_refuses_a_container_with_another_trtllm(tmp_path: Path) -> None:
    stack = _stack(f"{{name: m, engine_dir: /e, checkpoint_dir: {MODELS / 'llama-3.1-8b-instruct'}, tokenizer_dir: /t}}")
    path = tmp_path / "build.sh"
    path.write_text(build_recipes(stack, base_dir=Path("/"))[0].script)
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "the stack targets 1.2.1" in done.stderr


def test_llm_api_model_recipe_quantizes_with_modelopt(tmp_path: Path) -> None:
    stack = _stack("{name: m, engine_dir: /e, checkpoint_dir: /node/hf/m, tokenizer_dir: /t, precision: nvfp4}")
    llm_api = stack.model_copy(update={"models": [stack.models[0].model_copy(update={"llm_api": True}), stack.models[1]]})
    recipe = build_recipes(llm_api, base_dir=Path("/"))[0]
    assert recipe.target == "llm-api"
    lines = _dry_run(recipe.script, tmp_path)
    assert "hf_ptq.py" in lines[0] and "--qformat nvfp4" in lines[0] and "--kv_cache_qformat fp8" in lines[0]
    assert "--export_path /node/hf/m" in lines[0]


def test_recipes_command_writes_executable_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "stack.yaml"
    spec.write_text(
        "apiVersion: tritonstack/v1\nname: t\ntarget: {triton: '26.07', gpu: b200}\nmodels:\n"
        "- {name: m, engine_dir: /e, tokenizer_dir: /t, precision: fp8}\npools:\n- {name: p, models: [m]}\n"
    )
    out = tmp_path / "recipes"
    assert cli_main(["recipes", str(spec), "--out", str(out)]) == 0
    script = out / "m" / "build.sh"
    assert os.access(script, os.X_OK) and (out / "README.md").is_file()
    assert str(script) in capsys.readouterr().out
