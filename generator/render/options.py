"""Options every renderer receives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RenderOptions"]


@dataclass(frozen=True)
class RenderOptions:
    """Where the spec lives and where the output goes.

    Relative paths in the spec are relative to the spec file; they are written relative to each
    model's directory, so the output moves with its checkout (our python models resolve them against
    their own directory).
    """

    spec_dir: Path
    out_dir: Path
    # From the plan: model → max_tokens_in_paged_kv_cache where the spec leaves it unset, so
    # co-located models fit their GPUs by construction rather than by load order.
    kv_token_budgets: dict[str, int] = field(default_factory=dict)

    def spec_path(self, path: str) -> str:
        """A path from the spec, absolute: relative ones are relative to the spec file."""
        return os.path.normpath(os.path.join(os.path.abspath(self.spec_dir), path))

    def from_output(self, path: str, where: str) -> str:
        """A relative spec path as seen from ``where`` (a folder inside the output directory);
        absolute paths are node paths and pass through unchanged."""
        if os.path.isabs(path):
            return path
        return os.path.relpath(self.spec_path(path), os.path.join(os.path.abspath(self.out_dir), where))
