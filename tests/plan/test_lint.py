"""Every lint: one spec that triggers it and one that does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.cli import main as cli_main
from generator.plan.catalogs import load_catalogs
from generator.plan.lints import LINTS, lint_stack
from generator.spec import Stack, parse_spec
from generator.spec.source import parse_yaml
from tests.support import paths

MODELS = paths.MODELS
ENGINES = MODELS / "engines"
CAT = load_catalogs()
E019 = ENGINES / "llama-3.1-8b-fp8-trtllm-0.19.0"  # max_batch_size 64, max_input_len 4096, max_seq_len 8192


def _stack(model: str, target: str = 'triton: "25.12", gpu: b200', pools: str = "- {name: p, models: [m]}") -> Stack:
    return parse_spec(f"apiVersion: tritonstack/v1\nname: t\ntarget: {{{target}}}\nmodels:\n- {model}\npools:\n{pools}\n")


def _ids(stack: Stack, base: Path | None = None) -> set[str]:
    return {f.id for f in lint_stack(stack, base_dir=base or Path("/"), catalogs=CAT)}


FP8_CKPT = f"checkpoint_dir: {MODELS / 'llama-3.1-8b-instruct-fp8'}"
BASE = "name: m, engine_dir: /node/e, tokenizer_dir: /node/t"

CASES = {
    # id: (triggering stack, clean stack)
    "TS001": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}", 'triton: "25.05", gpu: gb10'),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}", 'triton: "25.09", gpu: gb10'),
    ),
    "TS002": (
        _stack(f"{{{BASE}, checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct-fp4'}, precision: nvfp4, tensor_parallel: 4}}",
               'triton: "25.12", gpu: h200'),
        _stack(f"{{{BASE}, checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct-fp4'}, precision: nvfp4, tensor_parallel: 2}}",
               'triton: "25.12", gpu: b200'),
    ),
    "TS003": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, kv_cache_dtype: nvfp4}}"),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, kv_cache_dtype: fp8}}"),
    ),
    "TS005": (
        _stack(f"{{name: m, engine_dir: {E019}, tokenizer_dir: /t, precision: fp8, max_batch_size: 128}}", 'triton: "25.05", gpu: h100'),
        _stack(f"{{name: m, engine_dir: {E019}, tokenizer_dir: /t, precision: fp8, max_batch_size: 64}}", 'triton: "25.05", gpu: h100'),
    ),
    "TS007": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, kv_cache: {{free_gpu_mem_fraction: 0.6}}}}\n"
               f"- {{name: n, engine_dir: /e, tokenizer_dir: /t, {FP8_CKPT}, precision: fp8, kv_cache: {{free_gpu_mem_fraction: 0.6}}}}",
               pools="- {name: p, models: [m, n]}"),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, kv_cache: {{free_gpu_mem_fraction: 0.4}}}}\n"
               f"- {{name: n, engine_dir: /e, tokenizer_dir: /t, {FP8_CKPT}, precision: fp8, kv_cache: {{free_gpu_mem_fraction: 0.5}}}}",
               pools="- {name: p, models: [m, n]}"),
    ),
    "TS008": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, streaming: false, max_batch_size: 8}}"),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, streaming: false, max_batch_size: 1}}"),
    ),
    "TS010": (
        _stack(f"{{{BASE}, checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct'}, precision: bf16}}", 'triton: "25.12", gpu: h100'),
        _stack(f"{{{BASE}, checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct'}, precision: bf16, tensor_parallel: 4}}", 'triton: "25.12", gpu: h100'),
    ),
    "TS011": (
        _stack(f"{{{BASE}, checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct'}, precision: bf16, tensor_parallel: 2, "
               "max_batch_size: 256, max_input_len: 30000, max_output_len: 2000, max_num_tokens: 30000}", 'triton: "25.12", gpu: h200'),
        _stack(f"{{{BASE}, checkpoint_dir: {MODELS / 'llama-3.3-70b-instruct'}, precision: bf16, tensor_parallel: 2, "
               "max_batch_size: 8}", 'triton: "25.12", gpu: h200'),
    ),
    "TS013": (
        _stack(f"{{{BASE}, precision: fp8}}"),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}"),
    ),
    "TS014": (
        _stack(f"{{name: m, engine_dir: {E019}, tokenizer_dir: /t, precision: fp8, max_input_len: 4096, max_output_len: 4096}}", 'triton: "25.12", gpu: h100'),
        _stack(f"{{name: m, engine_dir: {E019}, tokenizer_dir: /t, precision: fp8, max_input_len: 4096, max_output_len: 4096}}", 'triton: "25.05", gpu: h100'),
    ),
    "TS015": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8, tensor_parallel: 2}}", 'triton: "25.12", gpu: rtx-pro-6000'),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}", 'triton: "25.12", gpu: rtx-pro-6000'),
    ),
    "TS016": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: nvfp4}}"),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}"),
    ),
    "TS017": (
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}", 'triton: "25.12"'),
        _stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}"),
    ),
}


@pytest.mark.parametrize("lint_id", sorted(CASES))
def test_lint_triggers_and_stays_quiet(lint_id: str) -> None:
    bad, good = CASES[lint_id]
    findings = [f for f in lint_stack(bad, base_dir=Path("/"), catalogs=CAT) if f.id == lint_id]
    assert findings, f"{lint_id} did not trigger"
    assert all(f.severity == LINTS[lint_id][0] or lint_id == "TS003" for f in findings)
    assert all(f.message and f.fix for f in findings)
    assert lint_id not in _ids(good)


def _engine_copy(tmp_path: Path, paged_context_fmha: bool) -> Path:
    data = json.loads((E019 / "config.json").read_text())
    data["build_config"]["plugin_config"]["use_paged_context_fmha"] = paged_context_fmha
    engine = tmp_path / f"engine-{paged_context_fmha}"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps(data))
    return engine


@pytest.mark.parametrize("fmha, expected", [(False, True), (True, False)])
def test_kv_reuse_needs_paged_context_fmha(tmp_path: Path, fmha: bool, expected: bool) -> None:
    engine = _engine_copy(tmp_path, fmha)
    stack = _stack(
        f"{{name: m, engine_dir: {engine}, tokenizer_dir: /t, precision: fp8, max_input_len: 4096, "
        "max_output_len: 4096, kv_cache: {reuse: true}}", 'triton: "25.05", gpu: h100'
    )
    assert ("TS006" in _ids(stack)) is expected


LLAMA_VOCAB = {"<|begin_of_text|>": 0, "hello": 1, "world": 2}
OTHER_VOCAB = {"<s>": 0, "bonjour": 1, "monde": 2}


def _tokenizer(directory: Path, template: bool, vocab: dict[str, int] | None = None) -> Path:
    directory.mkdir(parents=True)
    config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if template:
        config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = {"model": {"type": "BPE", "vocab": vocab or LLAMA_VOCAB}, "added_tokens": []}
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    return directory


def test_chat_template_missing_suggests_a_sibling(tmp_path: Path) -> None:
    # "a-other" sorts first and has a template, but another vocabulary: never suggested (issue 15).
    _tokenizer(tmp_path / "models" / "a-other", template=True, vocab=OTHER_VOCAB)
    _tokenizer(tmp_path / "models" / "llama-fp8", template=True)
    _tokenizer(tmp_path / "models" / "llama-nvfp4", template=False)
    stack = _stack("{name: m, reference_engine: {}, tokenizer_dir: models/llama-nvfp4}")
    findings = [f for f in lint_stack(stack, base_dir=tmp_path, catalogs=CAT) if f.id == "TS004"]
    assert len(findings) == 1 and "llama-fp8" in findings[0].fix and "a-other" not in findings[0].fix
    assert "same base model" in findings[0].fix


def test_chat_template_sibling_of_another_model_is_not_suggested(tmp_path: Path) -> None:
    _tokenizer(tmp_path / "models" / "qwen", template=True, vocab=OTHER_VOCAB)
    _tokenizer(tmp_path / "models" / "llama-nvfp4", template=False)
    stack = _stack("{name: m, reference_engine: {}, tokenizer_dir: models/llama-nvfp4}")
    findings = [f for f in lint_stack(stack, base_dir=tmp_path, catalogs=CAT) if f.id == "TS004"]
    assert len(findings) == 1 and "qwen" not in findings[0].fix
    assert "add the model's chat_template" in findings[0].fix


def test_tokenizer_only_on_the_node_is_not_checked_here(tmp_path: Path) -> None:
    stack = _stack("{name: m, reference_engine: {}, tokenizer_dir: /srv/models/nowhere-here}")
    findings = [f for f in lint_stack(stack, base_dir=tmp_path, catalogs=CAT) if f.id in ("TS004", "TS019")]
    assert [f.id for f in findings] == ["TS019"]
    assert findings[0].severity == "info" and "not checked here" in findings[0].message
    fixed = _stack("{name: m, reference_engine: {}, tokenizer_dir: models/llama-fp8}")
    assert "TS004" not in _ids(fixed, tmp_path)
    no_chat = _stack("{name: m, reference_engine: {}, tokenizer_dir: models/llama-nvfp4, chat: false}")
    assert "TS004" not in _ids(no_chat, tmp_path)


def test_pool_without_partner() -> None:
    """load_spec refuses this too; the lint reports it for stacks built without the loader's cross-checks."""
    text = (
        "apiVersion: tritonstack/v1\nname: t\nmodels:\n- {name: m, reference_engine: {}, tokenizer_dir: /t}\n"
        "pools:\n- {name: pre, role: prefill, models: [m]}\n"
    )
    lonely = Stack.model_validate(parse_yaml(text, "x").data)
    assert "TS009" in _ids(lonely)
    paired = parse_spec(text + "- {name: dec, role: decode, models: [m]}\n")
    assert "TS009" not in _ids(paired)


def test_quickstart_is_clean_and_lint_command_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    quickstart = paths.REPO_ROOT / "examples" / "quickstart.yaml"
    assert cli_main(["lint", str(quickstart)]) == 0
    assert "0 finding(s)" in capsys.readouterr().out
    bad = tmp_path / "stack.yaml"
    bad.write_text(
        "apiVersion: tritonstack/v1\nname: t\ntarget: {triton: '25.05', gpu: gb10}\n"
        f"models:\n- {{{BASE}, {FP8_CKPT}, precision: fp8}}\npools:\n- {{name: p, models: [m]}}\n"
    )
    assert cli_main(["lint", str(bad)]) == 1
    assert "ERROR   TS001" in capsys.readouterr().out
    assert cli_main(["lint", str(bad), "--json"]) == 1
    assert {f["id"] for f in json.loads(capsys.readouterr().out)} >= {"TS001"}
    assert cli_main(["lint", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(lint_id in listing for lint_id in LINTS)


def test_every_lint_id_is_tested() -> None:
    covered = set(CASES) | {"TS004", "TS006", "TS009", "TS012", "TS018", "TS019"}
    assert covered == set(LINTS)


def test_unreadable_model_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{broken")
    stack = _stack(f"{{name: m, engine_dir: /e, checkpoint_dir: {tmp_path}, tokenizer_dir: /t, precision: fp8}}")
    assert "TS012" in _ids(stack)
    assert "TS012" not in _ids(_stack(f"{{{BASE}, {FP8_CKPT}, precision: fp8}}"))


def test_unknown_quantization_is_a_warning_that_says_what_was_assumed(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    config = json.loads((MODELS / "llama-3.1-8b-instruct" / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps(config))
    (checkpoint / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "MIXED_PRECISION"}}))
    stack = _stack(f"{{{BASE}, checkpoint_dir: {checkpoint}, precision: fp8}}")
    findings = [f for f in lint_stack(stack, base_dir=Path("/"), catalogs=CAT) if f.id == "TS018"]
    assert len(findings) == 1 and findings[0].severity == "warning"
    assert "MIXED_PRECISION" in findings[0].message and "planned as fp8" in findings[0].message
