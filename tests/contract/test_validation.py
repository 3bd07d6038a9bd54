"""Rendered repositories against the real backend's contract (generator/contract/).

Every example and fixture spec renders to configs the catalog accepts; taking away any parameter the
backend cannot load without, or bending one of upstream's tensors, is a validation error that names
the file, the key and upstream's expectation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.contract import load_contract
from generator.contract.check import check_against_contract, contract_kind
from generator.errors import ValidationFailure
from generator.render import RenderOptions, render
from generator.spec import load_spec
from generator.validate import validate_repositories
from tests.support import paths
from tests.support.paths import EXAMPLES, REPO_ROOT

FIXTURES = paths.FIXTURES / "specs"
SPECS = [EXAMPLES / "quickstart.yaml", EXAMPLES / "blackwell-b200.yaml", *sorted(FIXTURES.glob("*.yaml"))]


def _render(path: Path):
    stack = load_spec(path)
    return stack, render(stack, RenderOptions(spec_dir=path.parent, out_dir=REPO_ROOT / "build"))


def _engine_configs(files: dict[str, bytes]) -> list[str]:
    return sorted(
        path
        for path in files
        if path.endswith("/config.pbtxt") and contract_kind(path.split("/")[-2]) == "tensorrt_llm"
    )


def _edit(files: dict[str, bytes], path: str, change) -> dict[str, bytes]:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(files[path].decode(), config)
    change(config)
    return {**files, path: text_format.MessageToString(config).encode()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_render_satisfies_the_contract(spec: Path) -> None:
    stack, files = _render(spec)
    validate_repositories(files, stack)
    contract = load_contract(stack.target.release.tensor_names)
    checked = 0
    for path, data in files.items():
        if not path.endswith("/config.pbtxt"):
            continue
        kind = contract_kind(path.split("/")[-2])
        if kind is None:
            continue
        config = model_config_pb2.ModelConfig()
        text_format.Parse(data.decode(), config)
        assert check_against_contract(path, config, kind, contract) == []
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("era_spec", [EXAMPLES / "quickstart.yaml", FIXTURES / "hopper-2505.yaml"], ids=lambda p: p.stem)
def test_removing_any_required_parameter_is_refused_with_the_backends_message(era_spec: Path) -> None:
    stack, files = _render(era_spec)
    contract = load_contract(stack.target.release.tensor_names)
    required = [p.name for p in contract.model("tensorrt_llm").required_parameters]
    assert {"tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"} <= set(required)
    engine = _engine_configs(files)[0]
    for name in required:
        broken = _edit(files, engine, lambda config, name=name: config.parameters.pop(name))
        with pytest.raises(ValidationFailure) as caught:
            validate_repositories(broken, stack)
        message = str(caught.value)
        assert engine in message
        assert f"Cannot find parameter with name: {name}" in message


def test_every_rendered_engine_model_writes_the_guided_decoding_keys_unset() -> None:
    for spec in SPECS:
        _, files = _render(spec)
        for path in _engine_configs(files):
            config = model_config_pb2.ModelConfig()
            text_format.Parse(files[path].decode(), config)
            for key in ("guided_decoding_backend", "xgrammar_tokenizer_info_path"):
                assert config.parameters[key].string_value == "", f"{path}: {key}"


def test_a_tensor_that_differs_from_upstream_is_refused() -> None:
    stack, files = _render(EXAMPLES / "quickstart.yaml")
    ensemble = next(p for p in sorted(files) if p.endswith("_ensemble/config.pbtxt"))

    def flatten_text_output(config) -> None:
        for output in config.output:
            if output.name == "text_output":
                output.dims[:] = [1, -1]

    with pytest.raises(ValidationFailure) as caught:
        validate_repositories(_edit(files, ensemble, flatten_text_output), stack)
    assert f"{ensemble}: output 'text_output': dims are [1, -1], upstream declares [-1]" in str(caught.value)

    def drop_stream(config) -> None:
        kept = [t for t in config.input if t.name != "stream"]
        del config.input[:]
        config.input.extend(kept)

    with pytest.raises(ValidationFailure) as caught:
        validate_repositories(_edit(files, ensemble, drop_stream), stack)
    assert "input 'stream' is not declared" in str(caught.value)


def test_a_value_the_backend_would_ignore_is_refused() -> None:
    stack, files = _render(EXAMPLES / "quickstart.yaml")
    engine = _engine_configs(files)[0]

    def misspell(config) -> None:
        config.parameters["batch_scheduler_policy"].string_value = "max-utilization"
        config.parameters["enable_kv_cache_reuse"].string_value = "yes"

    with pytest.raises(ValidationFailure) as caught:
        validate_repositories(_edit(files, engine, misspell), stack)
    message = str(caught.value)
    assert "parameter 'batch_scheduler_policy' = 'max-utilization'" in message
    assert "parameter 'enable_kv_cache_reuse' = 'yes'" in message


def test_our_own_inputs_must_stay_optional() -> None:
    stack, files = _render(EXAMPLES / "quickstart.yaml")
    bls = next(p for p in sorted(files) if p.endswith("_bls/config.pbtxt"))

    def require_messages(config) -> None:
        for tensor in config.input:
            if tensor.name == "messages":
                tensor.optional = False

    with pytest.raises(ValidationFailure) as caught:
        validate_repositories(_edit(files, bls, require_messages), stack)
    assert "input 'messages' is ours, not upstream's, so it must be optional" in str(caught.value)
