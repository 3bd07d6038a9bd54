"""A wheel renders: built from this checkout, installed non-editable in a fresh venv, run from an empty folder.

The venv borrows the dependencies of the test venv through a ``.pth`` line (a path on sys.path, so
the editable install's finder, which lives in a ``.pth`` file there, is never run); ``tritonstack``
must import the installed copy and read templates, deploy/ and monitoring/ from inside it.
Offline: ``--no-index --no-deps`` throughout.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.support.paths import EXAMPLES, REPO_ROOT

pytestmark = pytest.mark.slow

# What the build needs of the checkout; tests, benchmarks and the venv stay out of the copy.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "generator", "templates", "deploy", "monitoring")


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv with the wheel built from this checkout installed in it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    shutil.copytree(EXAMPLES / "tokenizers" / "tiny-chat", source / "examples" / "tokenizers" / "tiny-chat")
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "--wheel-dir", wheels, source], cwd=root)
    (wheel,) = wheels.glob("tritonstack-*.whl")

    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=root)
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root).strip())
    (purelib / "test_venv_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir / "bin"


def _render(tritonstack: Path, spec_dir: Path) -> tuple[Path, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    stdout = _run([tritonstack, "render", "quickstart.yaml", "--reference-engine", "--out", "out"], cwd=spec_dir, env=env)
    return spec_dir / "out", stdout


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_wheel_imports_its_own_copy_with_the_data_inside(installed: Path, tmp_path: Path) -> None:
    probe = "import generator.resources as r; print(r.__file__); print(r.DATA_ROOT)"
    module, data_root = _run([installed / "python", "-c", probe], cwd=tmp_path).split()
    venv_root = installed.parent.resolve()
    assert Path(module).resolve().is_relative_to(venv_root), module
    assert Path(data_root).is_relative_to(venv_root) and Path(data_root).name == "_data", data_root
    for folder in ("templates/model_repo", "deploy/templates/k8s", "monitoring/rules", "examples/tokenizers/tiny-chat"):
        assert (Path(data_root) / folder).is_dir(), folder


def test_the_wheel_renders_the_quickstart_like_the_checkout(installed: Path, tmp_path: Path) -> None:
    # The spec with its tokenizer beside it: no path depends on where tritonstack is installed.
    for name in ("wheel", "editable"):
        (tmp_path / name / "tokenizers").mkdir(parents=True)
        shutil.copy2(EXAMPLES / "quickstart.yaml", tmp_path / name)
        shutil.copytree(EXAMPLES / "tokenizers" / "tiny-chat", tmp_path / name / "tokenizers" / "tiny-chat")
    from_wheel, _ = _render(installed / "tritonstack", tmp_path / "wheel")
    from_checkout, _ = _render(Path(sys.executable).parent / "tritonstack", tmp_path / "editable")
    wheel_tree, checkout_tree = _tree(from_wheel), _tree(from_checkout)
    assert wheel_tree.keys() == checkout_tree.keys()
    assert [p for p in wheel_tree if wheel_tree[p] != checkout_tree[p]] == []


def test_the_wheel_falls_back_to_its_bundled_tokenizer(installed: Path, tmp_path: Path) -> None:
    # The spec alone in an empty folder: its tokenizer is not here, so the render points at the
    # tiny-chat the wheel carries (a path into the venv, which the checkout's render cannot share).
    for name in ("wheel", "editable"):
        (tmp_path / name).mkdir()
        shutil.copy2(EXAMPLES / "quickstart.yaml", tmp_path / name)
    from_wheel, notes = _render(installed / "tritonstack", tmp_path / "wheel")
    from_checkout, _ = _render(Path(sys.executable).parent / "tritonstack", tmp_path / "editable")
    assert "using the bundled tiny-chat" in notes
    config = "model_repos/pd-decode/tiny-pd_postprocessing/config.pbtxt"
    text = (from_wheel / config).read_text()
    relative = text.split('key: "tokenizer_dir"')[1].split('string_value: "')[1].split('"')[0]
    bundled = (from_wheel / config).parent / relative  # relative to the model's folder
    assert (bundled / "tokenizer.json").is_file() and bundled.resolve().is_relative_to(installed.parent.resolve())
    assert not filecmp.dircmp(from_wheel, from_checkout).left_only
