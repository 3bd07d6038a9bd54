"""The newcomer's path (issue 17): messages a new user sees, `--version`, `doctor`, and the checks
`up` makes before it starts anything."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from generator import __version__
from generator.cli import main
from generator.commands.common import default_out_dir
from generator.runtime.environment import (
    Finding,
    check_numpy,
    check_ports,
    check_python_stub,
    check_shared_memory,
    required_numpy,
)
from tests.support.paths import EXAMPLES

SEVERAL_PROBLEMS = (
    "apiVersion: tritonstack/v1\nname: s\nmodels:\n"
    "  - {name: m, reference_engine: {}, tokenizer_dir: t, max_batch_size: 0, colour: red}\n"
    "pools: [{name: p, models: [m], replicas: 0}]\n"
)


# --------------------------------------------------------------------------- item 3: every problem marked


def test_every_spec_problem_is_marked_as_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "stack.yaml"
    spec.write_text(SEVERAL_PROBLEMS)
    assert main(["validate", str(spec)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"error: {spec}:") for line in lines), lines


def test_a_single_multi_line_error_keeps_its_continuation_indented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from generator.cli import report_error
    from generator.errors import PlanError

    report_error(PlanError(["models[0]: 3 GiB too big", "models[1]: 1 GiB too big"]))
    assert capsys.readouterr().err.splitlines() == [
        "error: the stack does not fit:",
        "  models[0]: 3 GiB too big",
        "  models[1]: 1 GiB too big",
    ]


# --------------------------------------------------------------------------- item 5: --version, doctor


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"tritonstack {__version__}"


def test_doctor_reports_each_part_and_passes_here(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor"])
    out = capsys.readouterr().out
    for part in (
        "tritonserver",
        "python backend stub",
        "numpy",
        "prometheus",
        "promtool",
        "nginx",
        "kubectl",
    ):
        assert part in out, out
    # This machine is set up by `make test`: everything `up` needs is here.
    assert code == 0, out


def test_doctor_exits_1_and_names_the_fix_when_up_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from generator.runtime import environment

    monkeypatch.setattr(environment, "installed_numpy", lambda: "2.1.0")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "numpy 2.1.0" in out and "pip install 'numpy" in out


# --------------------------------------------------------------------------- item 2: checks before `up`


def test_numpy_2_is_refused_with_the_pip_command() -> None:
    need = required_numpy()
    assert need is not None and "<2" in need.replace(".0", "")
    finding = check_numpy("2.0.1", need)
    assert not finding.ok and finding.needed_by_up
    assert "2.0.1" in finding.detail
    assert finding.fix == f"{sys.executable} -m pip install 'numpy{need}'"
    assert check_numpy("1.26.4", need).ok


def test_missing_python_stub_is_refused(tmp_path: Path) -> None:
    finding = check_python_stub(tmp_path, "3.11")
    assert not finding.ok and "3.11" in finding.detail and finding.fix


def test_a_port_in_use_is_refused_with_the_flag_that_avoids_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        findings = check_ports({"router": port}, "127.0.0.1")
    assert [f.ok for f in findings] == [False]
    assert str(port) in findings[0].detail and "--router-port 0" in findings[0].fix


def test_too_little_shared_memory_is_refused(tmp_path: Path) -> None:
    finding = check_shared_memory(python_stubs=10, shm_dir=tmp_path, free_bytes=1 << 20)
    assert not finding.ok and "--shm-size" in finding.fix
    assert check_shared_memory(python_stubs=10, shm_dir=tmp_path, free_bytes=1 << 34).ok


def test_up_refuses_to_start_when_numpy_is_too_new(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from generator.runtime import environment

    monkeypatch.setattr(environment, "installed_numpy", lambda: "2.1.0")
    code = main(["up", str(EXAMPLES / "quickstart.yaml"), "--reference-engine", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 1
    assert "numpy 2.1.0" in err and "pip install" in err
    assert not (tmp_path / "b.run").exists()  # nothing was started


def test_finding_line_reads_well() -> None:
    line = Finding("numpy", ok=False, detail="numpy 2.1.0; needs <2", fix="pip install 'numpy<2'").line()
    assert line.startswith("numpy") and "pip install" in line


# --------------------------------------------------------------------------- item 1: up writes its own folder


def test_up_defaults_to_the_folder_the_demo_writes() -> None:
    assert default_out_dir(EXAMPLES / "quickstart.yaml") == Path("build") / "quickstart"
