"""Shared fixtures: golden-file refresh, and real tritonservers running rendered stacks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.pipeline import build
from generator.runtime.launcher import Launcher, LaunchSettings, Replica
from generator.runtime.tritonserver import find_tritonserver
from generator.spec import Stack
from generator.write import write_output

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing (make golden)",
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@dataclass
class RunningStack:
    """A rendered stack whose tritonservers are up; replicas by pool."""

    stack: Stack
    out_dir: Path
    launcher: Launcher

    def replicas(self, pool: str) -> list[Replica]:
        return [r for r in self.launcher.replicas if r.pool == pool]

    def url(self, pool: str, index: int = 0) -> str:
        return self.replicas(pool)[index].http_url


def start_stack(spec: Path, out_dir: Path) -> Launcher:
    """Render ``spec`` with the reference engine into ``out_dir`` and start its servers."""
    built = build(spec, out_dir, reference_engine=True)
    write_output(built.files, out_dir)
    launcher = Launcher(built.stack, out_dir, find_tritonserver(), out_dir.with_name("logs"), LaunchSettings())
    try:
        launcher.start()
        launcher.wait_ready()
    except BaseException:
        launcher.stop()
        raise
    return launcher


@pytest.fixture(scope="session")
def running_quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """examples/quickstart.yaml on the reference engine: pools chat (2 replicas), pd-prefill, pd-decode."""
    out_dir = tmp_path_factory.mktemp("quickstart") / "build"
    launcher = start_stack(EXAMPLES / "quickstart.yaml", out_dir)
    try:
        yield RunningStack(launcher.stack, out_dir, launcher)
    finally:
        launcher.stop()
