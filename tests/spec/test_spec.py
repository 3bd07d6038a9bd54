"""The spec: valid examples load; every broken spec gives its located message and exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.cli import main
from generator.errors import SpecError
from generator.spec import json_schema, load_spec, parse_spec
from tests.support import paths
from tests.support.paths import EXAMPLES

BAD_SPECS = sorted((paths.FIXTURES / "bad_specs").glob("*.yaml"))


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("example", ["quickstart.yaml", "blackwell-b200.yaml"])
def test_examples_load(example: str) -> None:
    stack = load_spec(EXAMPLES / example)
    assert stack.api_version == "tritonstack/v1"
    assert {p.role for p in stack.pools} == {"aggregated", "prefill", "decode"}


def test_defaults_are_written_down_once() -> None:
    stack = parse_spec(
        "apiVersion: tritonstack/v1\nname: s\nmodels: [{name: m, reference_engine: {}, tokenizer_dir: t}]\n"
        "pools: [{name: p, models: [m]}]\n"
    )
    model = stack.models[0]
    assert (model.max_batch_size, model.streaming, model.kv_cache.reuse) == (8, True, False)
    assert stack.target.triton == "25.12" and stack.pools[0].role == "aggregated"
    assert stack.partner_of(stack.pools[0]) is None


@pytest.mark.parametrize("spec", BAD_SPECS, ids=lambda p: p.stem)
def test_bad_spec_message(spec: Path, tmp_path: Path) -> None:
    target = tmp_path / "stack.yaml"
    target.write_bytes(spec.read_bytes())
    with pytest.raises(SpecError) as caught:
        load_spec(target)
    message = str(caught.value).replace(str(target), "stack.yaml")
    assert expected_message(spec) in message


def test_bad_spec_cli_exit_code_without_traceback(tmp_path: Path) -> None:
    target = tmp_path / "stack.yaml"
    target.write_bytes((BAD_SPECS[0]).read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "generator.cli", "validate", str(target)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "stack.yaml:" in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(
            "apiVersion: tritonstack/v1\nname: s\nmodels:\n"
            "  - {name: m, reference_engine: {}, tokenizer_dir: t, max_batch_size: 0, colour: red}\n"
            "pools: [{name: p, models: [m], replicas: 0}]\n"
        )
    assert len(caught.value.problems) == 3


def test_schema_describes_every_top_level_field() -> None:
    schema = json_schema()
    assert set(schema["properties"]) >= {"apiVersion", "name", "target", "models", "pools", "router", "exporter"}
    assert schema["additionalProperties"] is False


# Random specs: built from plausible pieces and random junk. Whatever comes in, the loader answers
# with a Stack or a SpecError — never another exception.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10_000), st.floats(allow_nan=False), st.text(max_size=12))
_names = st.one_of(st.sampled_from(["tiny", "chat", "a-b", "x.y", "../x", "A", "", "a_b", "router"]), st.text(max_size=8))
_model = st.fixed_dictionaries(
    {"name": _names, "tokenizer_dir": st.one_of(st.just("tok"), _scalars)},
    optional={
        "reference_engine": st.one_of(st.just({}), _scalars),
        "engine_dir": st.one_of(st.just("/e"), _scalars),
        "max_batch_size": _scalars,
        "max_input_len": _scalars,
        "max_num_tokens": _scalars,
        "streaming": _scalars,
        "gpu_ids": st.one_of(st.lists(st.integers(-1, 8), max_size=3), _scalars),
        "tensor_parallel": _scalars,
    },
)
_pool = st.fixed_dictionaries(
    {"name": _names, "models": st.one_of(st.lists(_names, max_size=3), _scalars)},
    optional={
        "role": st.one_of(st.sampled_from(["aggregated", "prefill", "decode", "both"]), _scalars),
        "replicas": _scalars,
        "partner": _names,
    },
)
_spec = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["tritonstack/v1", "tritonstack/v1", "v0"]), "name": _names},
    optional={
        "models": st.one_of(st.lists(_model, max_size=3), _scalars),
        "pools": st.one_of(st.lists(_pool, max_size=3), _scalars),
        "target": st.one_of(st.fixed_dictionaries({"triton": st.sampled_from(["25.05", "26.07", "99.99"])}), _scalars),
        "surprise": _scalars,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_spec)
def test_random_specs_never_crash(data: dict) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        parse_spec(text)
    except SpecError as error:
        assert all(line.startswith("stack.yaml") for line in error.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_crashes(text: str) -> None:
    try:
        parse_spec(text)
    except SpecError:
        pass


def test_spec_package_imports_nothing_downstream() -> None:
    """Router, exporter, plan and render read their settings from the spec, never the reverse: the
    spec package alone pulls in no module of the project but ``generator.errors``."""
    code = "import sys, generator.spec; print('\\n'.join(sorted(m for m in sys.modules if m.startswith('generator'))))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    outside = [
        name for name in loaded
        if name not in {"generator", "generator.errors", "generator.spec"} and not name.startswith("generator.spec.")
    ]
    assert "generator.spec.stack" in loaded and outside == []
