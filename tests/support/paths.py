"""Where the tests find the repository and their data: golden files and fixtures stay at
``tests/golden/`` and ``tests/fixtures/`` whatever folder a test module lives in."""

from __future__ import annotations

from pathlib import Path

__all__ = ["TESTS_ROOT", "REPO_ROOT", "EXAMPLES", "GOLDEN", "FIXTURES", "MODELS"]

TESTS_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_ROOT.parent
EXAMPLES = REPO_ROOT / "examples"
GOLDEN = TESTS_ROOT / "golden"
FIXTURES = TESTS_ROOT / "fixtures"
MODELS = FIXTURES / "models"
