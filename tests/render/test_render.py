"""Rendering: golden files, determinism, escaping, and the release-dependent tensor names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.contract import load_contract
from generator.render import RenderOptions, render
from generator.render.jinja import pbtxt_str
from generator.spec import load_spec
from generator.spec.releases import RELEASES
from generator.validate import validate_repositories
from tests.support import paths
from tests.support.paths import EXAMPLES, REPO_ROOT

GOLDEN = paths.GOLDEN / "render"
SPECS = {
    "quickstart": EXAMPLES / "quickstart.yaml",
    "blackwell-b200": EXAMPLES / "blackwell-b200.yaml",
    "hopper-2505": paths.FIXTURES / "specs" / "hopper-2505.yaml",
}


def render_spec(path: Path) -> dict[str, bytes]:
    stack = load_spec(path)
    files = render(stack, RenderOptions(spec_dir=path.parent, out_dir=REPO_ROOT / "build"))
    validate_repositories(files, stack)
    return files


def golden_view(files: dict[str, bytes]) -> dict[str, bytes]:
    """The configs byte for byte, plus the list of every file (python sources are covered by
    their own tests; their bytes here would make every edit a golden change)."""
    view = {path: data for path, data in files.items() if path.endswith(".pbtxt")}
    view["FILES.txt"] = "".join(f"{path}\n" for path in sorted(files)).encode()
    return view


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden_render(name: str, update_golden: bool) -> None:
    view = golden_view(render_spec(SPECS[name]))
    root = GOLDEN / name
    if update_golden:
        if root.exists():
            for old in sorted(root.rglob("*"), reverse=True):
                old.unlink() if old.is_file() else old.rmdir()
        for path, data in view.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        return
    on_disk = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(view), "rendered file set changed; run `make golden` if intended"
    for path, data in view.items():
        assert data == on_disk[path], f"{path} differs from its golden file; run `make golden` if intended"


def test_second_render_is_byte_identical() -> None:
    assert render_spec(SPECS["quickstart"]) == render_spec(SPECS["quickstart"])


def test_strings_are_escaped_into_pbtxt() -> None:
    files = render_spec(SPECS["hopper-2505"])
    config = model_config_pb2.ModelConfig()
    text_format.Parse(files["model_repos/main/mistral-7b_tensorrt_llm/config.pbtxt"].decode(), config)
    assert config.parameters["gpt_model_path"].string_value == '/engines/mistral "7b" {bf16}'
    assert config.parameters["tokenizer_dir"].string_value == "/models/mistral-7b\\tokenizer"


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "ünï", "}\nparameters {", "\x01"])
def test_pbtxt_str_round_trips(value: str) -> None:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(f"name: {pbtxt_str(value)}", config)
    assert config.name == value


def test_release_decides_tensor_names() -> None:
    legacy = render_spec(SPECS["hopper-2505"])["model_repos/main/mistral-7b_tensorrt_llm/config.pbtxt"].decode()
    current = render_spec(SPECS["quickstart"])["model_repos/chat/tiny-chat_tensorrt_llm/config.pbtxt"].decode()
    assert '"min_length"' in legacy and '"random_seed"' in legacy and "return_num_input_tokens" not in legacy
    assert '"min_tokens"' in current and '"seed"' in current and '"num_output_tokens"' in current
    assert "min_length" not in current and "random_seed" not in current


def test_release_capabilities_agree_with_their_backend_contract() -> None:
    """The catalog's capability fields say what the contract catalog of the same generation declares."""
    for release in RELEASES.values():
        engine = load_contract(release.tensor_names).model("tensorrt_llm")
        assert engine.input(release.seed_input) is not None, release.release
        for name in ("return_num_input_tokens", "return_num_output_tokens"):
            assert (engine.input(name) is not None) == release.returns_token_counts, (release.release, name)
        for name in ("num_input_tokens", "num_output_tokens"):
            assert (engine.output(name) is not None) == release.returns_token_counts, (release.release, name)


def test_no_placeholder_survives() -> None:
    for name in SPECS:
        for path, data in render_spec(SPECS[name]).items():
            if path.endswith(".pbtxt"):
                assert b"${" not in data, path


def test_several_engines_share_one_repository(tmp_path: Path) -> None:
    spec = tmp_path / "stack.yaml"
    spec.write_text(
        "apiVersion: tritonstack/v1\nname: multi\nmodels:\n"
        "  - {name: a, reference_engine: {}, tokenizer_dir: tok}\n"
        "  - {name: b, reference_engine: {seed: 3}, tokenizer_dir: tok}\n"
        "pools: [{name: both, models: [a, b]}]\n"
    )
    files = render_spec(spec)
    names = {p.split("/")[2] for p in files if p.endswith("config.pbtxt")}
    assert names == {f"{m}_{k}" for m in "ab" for k in ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "bls")}
    ensemble = files["model_repos/both/b_ensemble/config.pbtxt"].decode()
    assert '"b_tensorrt_llm"' in ensemble and '"a_' not in ensemble


def test_relative_paths_follow_the_model_directory() -> None:
    files = render_spec(SPECS["quickstart"])
    config = model_config_pb2.ModelConfig()
    text_format.Parse(files["model_repos/chat/tiny-chat_preprocessing/config.pbtxt"].decode(), config)
    relative = config.parameters["tokenizer_dir"].string_value
    model_dir = REPO_ROOT / "build" / "model_repos" / "chat" / "tiny-chat_preprocessing"
    assert (Path(os.path.normpath(model_dir / relative)) / "tokenizer.json").is_file()
