"""Shared fixtures: golden-file refresh, and real tritonservers running rendered stacks.

The helpers behind them live in ``tests/support/`` (paths, ``RunningStack``, ``start_stack``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.paths import EXAMPLES
from tests.support.stack import RunningStack, start_stack


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


@pytest.fixture(scope="session")
def running_quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """examples/quickstart.yaml on the reference engine: pools chat (2 replicas), pd-prefill, pd-decode."""
    out_dir = tmp_path_factory.mktemp("quickstart") / "build"
    launcher = start_stack(EXAMPLES / "quickstart.yaml", out_dir)
    try:
        yield RunningStack(launcher.stack, out_dir, launcher)
    finally:
        launcher.stop()
