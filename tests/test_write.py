"""Writing: atomic replacement, ownership, interrupted writes, and drift detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator import write as write_module
from generator.cli import main
from generator.errors import WriteError
from generator.write import MANIFEST, check_output, diff_output, with_manifest, write_output
from tests.support.paths import EXAMPLES


def files(**contents: str) -> dict[str, bytes]:
    return with_manifest({path.replace("__", "/"): text.encode() for path, text in contents.items()}, "s")


def test_write_then_replace(tmp_path: Path) -> None:
    out = tmp_path / "build"
    write_output(files(a__config="one", b="two"), out)
    result = write_output(files(a__config="uno", c="three"), out)
    assert (out / "a" / "config").read_text() == "uno"
    assert not (out / "b").exists() and (out / "c").read_text() == "three"
    assert result.changed == ["a/config", "b", "c", MANIFEST]
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) == {"a/config", "c"}
    assert not [p for p in tmp_path.iterdir() if p.name != "build"], "no temporary directory left behind"


def test_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(WriteError, match="was not written by tritonstack"):
        write_output(files(a="1"), out)
    assert (out / "notes.txt").read_text() == "mine"
    write_output(files(a="1"), out, force=True)
    assert not (out / "notes.txt").exists()


def test_refuses_to_drop_files_added_by_hand(tmp_path: Path) -> None:
    out = tmp_path / "build"
    write_output(files(a="1"), out)
    (out / "added-by-hand.txt").write_text("keep me")
    with pytest.raises(WriteError, match="added-by-hand.txt"):
        write_output(files(a="2"), out)
    assert (out / "a").read_text() == "1"


def test_interrupted_write_leaves_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "build"
    write_output(files(a="old", b="old"), out)
    real_write = Path.write_bytes
    calls = {"n": 0}

    def fail_midway(self: Path, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_midway)
    with pytest.raises(WriteError, match="previous output is unchanged"):
        write_output(files(a="new", b="new"), out)
    monkeypatch.undo()
    assert (out / "a").read_text() == "old" and (out / "b").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_fallback_without_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write_module, "_exchange", lambda a, b: False)
    out = tmp_path / "build"
    write_output(files(a="1"), out)
    write_output(files(a="2"), out)
    assert (out / "a").read_text() == "2"


def test_diff_and_check(tmp_path: Path) -> None:
    out = tmp_path / "build"
    write_output(files(a="line\n"), out)
    check_output(files(a="line\n"), out)
    (out / "a").write_text("edited\n")
    diff = diff_output(files(a="line\n"), out)
    assert "-edited" in diff and "+line" in diff and "a/a" in diff


def test_cli_render_check_and_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "build"
    spec = str(EXAMPLES / "quickstart.yaml")
    assert main(["render", spec, "--out", str(out)]) == 0
    assert main(["check", spec, "--out", str(out)]) == 0
    config = out / "model_repos" / "chat" / "tiny-chat_ensemble" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 8", "max_batch_size: 4"))
    capsys.readouterr()
    assert main(["check", spec, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "-max_batch_size: 4" in captured.out and "+max_batch_size: 8" in captured.out
    assert "has drifted" in captured.err
    assert main(["render", spec, "--out", str(out)]) == 0
    assert main(["check", spec, "--out", str(out)]) == 0


def test_cli_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "build"
    assert main(["render", str(EXAMPLES / "quickstart.yaml"), "--out", str(out), "--dry-run"]) == 0
    assert not out.exists()
    assert "manifest.json" in capsys.readouterr().out
