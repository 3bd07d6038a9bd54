"""Golden files of the deployment output for a two-pool and a disaggregated spec.

Refresh after an intended change with ``pytest tests/test_deploy_golden.py --update-golden`` and
review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy_fixtures import deploy_files, stack_of
from tests.golden_support import assert_golden_tree

GOLDEN = Path(__file__).parent / "golden" / "deploy"


@pytest.mark.parametrize("name", ["two-pool", "disagg", "multi-node"])
def test_deploy_golden(name: str, update_golden: bool) -> None:
    assert_golden_tree(deploy_files(stack_of(name)), GOLDEN / name, update_golden)
