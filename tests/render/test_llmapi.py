"""LLM-API model set: golden files, Triton ModelConfig protobuf parse, model.yaml keys.

Refresh the golden files after an intended change with ``pytest tests/render/test_llmapi.py --update-golden``.
"""

from __future__ import annotations

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.errors import RenderError
from generator.render.model_repo.llmapi import render_llmapi_models
from generator.spec import Stack, Target, parse_spec, uses_llm_api
from tests.support import paths

GOLDEN = paths.GOLDEN / "llmapi"

SPEC = """
apiVersion: tritonstack/v1
name: llmapi
target: {triton: "26.07", gpu: b200}
models:
- name: llama-3.1-8b
  engine_dir: /models/engines/unused
  checkpoint_dir: /models/hf/Llama-3.1-8B-Instruct-FP8
  tokenizer_dir: /models/hf/Llama-3.1-8B-Instruct-FP8
  precision: fp8
  tensor_parallel: 2
  max_batch_size: 64
  max_input_len: 8192
  max_output_len: 2048
  kv_cache: {reuse: true}
- name: tiny
  reference_engine: {}
  tokenizer_dir: /t
pools:
- {name: chat, models: [llama-3.1-8b, tiny]}
"""


def _llm_api(stack: Stack) -> Stack:
    """The lead adds `llm_api: bool` to Model; the render reads it from the model object."""
    models = [m.model_copy(update={"llm_api": True}) if m.reference_engine is None else m for m in stack.models]
    return stack.model_copy(update={"models": models})


def _render() -> dict[str, bytes]:
    return render_llmapi_models(_llm_api(parse_spec(SPEC)), {"llama-3.1-8b": 400000}, {"llama-3.1-8b": "fp8"})


def test_golden_files(update_golden: bool) -> None:
    files = _render()
    assert sorted(files) == [
        "model_repos/chat/llama-3.1-8b_llmapi/1/model.py",
        "model_repos/chat/llama-3.1-8b_llmapi/1/model.yaml",
        "model_repos/chat/llama-3.1-8b_llmapi/config.pbtxt",
    ]
    for relative, data in files.items():
        golden = GOLDEN / relative
        if update_golden:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(data)
        assert golden.is_file(), f"{golden} is missing; create it with --update-golden"
        assert golden.read_bytes() == data, f"{relative} differs from its golden file"


def test_config_parses_as_triton_model_config() -> None:
    text = _render()["model_repos/chat/llama-3.1-8b_llmapi/config.pbtxt"].decode()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == "llama-3.1-8b_llmapi" and config.backend == "python"
    assert config.max_batch_size == 0 and config.model_transaction_policy.decoupled
    inputs = {i.name: i for i in config.input}
    assert not inputs["text_input"].optional and inputs["sampling_param_max_tokens"].optional
    assert "text_output" in {o.name for o in config.output}
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_model_yaml_keys() -> None:
    data = yaml.safe_load(_render()["model_repos/chat/llama-3.1-8b_llmapi/1/model.yaml"])
    assert data["model"] == "/models/hf/Llama-3.1-8B-Instruct-FP8" and data["backend"] == "pytorch"
    assert (data["tensor_parallel_size"], data["pipeline_parallel_size"]) == (2, 1)
    assert (data["max_batch_size"], data["max_seq_len"]) == (64, 10240)
    assert data["kv_cache_config"] == {"enable_block_reuse": True, "dtype": "fp8", "max_tokens": 400000}
    assert data["triton_config"] == {"max_batch_size": 0, "decoupled": True, "cancellation_check_period_ms": 100}


def test_loader_is_valid_python_and_names_the_container_model() -> None:
    source = _render()["model_repos/chat/llama-3.1-8b_llmapi/1/model.py"].decode()
    compile(source, "model.py", "exec")
    assert "/app/all_models/llmapi/tensorrt_llm/1/model.py" in source


def test_engine_targets_render_nothing_and_disaggregated_pools_get_our_model() -> None:
    stack = parse_spec(SPEC)
    assert not uses_llm_api(stack, stack.models[0]) and render_llmapi_models(stack) == {}
    disagg_text = (
        SPEC.replace("- {name: chat, models: [llama-3.1-8b, tiny]}",
                     "- {name: pre, role: prefill, models: [llama-3.1-8b]}\n"
                     "- {name: dec, role: decode, models: [llama-3.1-8b]}\n- {name: chat, models: [tiny]}")
    )
    # An engine pair is refused on 26.07 (spec.stack._kv_transfer_problems); the LLM-API pair is ours to render.
    disagg = parse_spec(disagg_text.replace("engine_dir: /models/engines/unused", "llm_api: true"))
    files = render_llmapi_models(disagg)
    assert "cache_transceiver_config" in files["model_repos/pre/llama-3.1-8b_llmapi/1/model.yaml"].decode()
    assert b"disaggregated_params" in files["model_repos/dec/llama-3.1-8b_llmapi/1/model.py"]
    hopper = disagg.model_copy(update={"target": Target(triton="25.05", gpu="h100")})
    with pytest.raises(RenderError, match="cache transceiver backend"):
        render_llmapi_models(hopper)
