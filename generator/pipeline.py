"""spec → plan → render → validate, as one call the commands share.

The plan refuses a stack that does not fit its GPUs before anything renders, and hands the render
the KV token budget of each model.

Writing stays outside: ``render`` writes the result, ``check`` compares it, ``validate`` does
neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import PlanError
from generator.plan import plan_stack
from generator.render import RenderOptions, render
from generator.render.model_repo.reference import as_reference_engine
from generator.spec import Stack, load_spec
from generator.validate import validate_repositories
from generator.write import with_manifest

__all__ = ["Built", "build"]


@dataclass(frozen=True)
class Built:
    stack: Stack
    files: dict[str, bytes]  # including manifest.json
    notes: list[str] = field(default_factory=list)


def build(spec_path: Path, out_dir: Path, *, reference_engine: bool = False) -> Built:
    stack = load_spec(spec_path)
    spec_dir = spec_path.parent
    notes: list[str] = []
    if reference_engine:
        stack, notes = as_reference_engine(stack, spec_dir)
    plan = plan_stack(stack, base_dir=spec_dir)
    if plan.problems:
        raise PlanError(plan.problems)
    budgets = plan.kv_token_budgets()
    files = render(stack, RenderOptions(spec_dir=spec_dir, out_dir=out_dir, kv_token_budgets=budgets))
    validate_repositories(files, stack)
    return Built(stack=stack, files=with_manifest(files, stack.name), notes=notes)
