"""Golden files of the deployment output for a two-pool and a disaggregated spec.

Refresh after an intended change with ``pytest tests/deploy/test_golden.py --update-golden`` and
review the diff.
"""

from __future__ import annotations

import pytest

from tests.support import paths
from tests.support.deploy import deploy_files, stack_of
from tests.support.golden import assert_golden_tree

GOLDEN = paths.GOLDEN / "deploy"


@pytest.mark.parametrize("name", ["two-pool", "disagg", "multi-node"])
def test_deploy_golden(name: str, update_golden: bool) -> None:
    assert_golden_tree(deploy_files(stack_of(name)), GOLDEN / name, update_golden)
