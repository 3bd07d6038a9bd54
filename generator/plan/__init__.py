"""The planner: a stack's capacity plan (``plan``), the lints that judge it (``lints``), the facts
both read from model files (``facts``, ``sources``) and the build recipes (``recipes``).

:func:`plan_stack` is the plan every later stage uses: sized, then linted, lint errors among its
problems. It lives here because the lints build on the sized plan of ``plan.py``.
"""

from __future__ import annotations

from pathlib import Path

from generator.plan.catalogs import Catalogs, load_catalogs
from generator.plan.lints import lint_stack
from generator.plan.plan import StackPlan, size_stack
from generator.spec import Stack

__all__ = ["plan_stack"]


def plan_stack(
    stack: Stack, catalogs: Catalogs | None = None, base_dir: Path | None = None, *, lint: bool = True
) -> StackPlan:
    """Plan every model and every GPU of ``stack`` (a validated :class:`generator.spec.Stack`).

    With ``lint`` (the default) the lints run on the plan too, and every lint error joins
    ``problems``: whatever plans, renders or writes recipes from this plan refuses what
    ``tritonstack lint`` calls an error (NVFP4 on Hopper, a container too old for the GPU, a model
    config that does not parse), not only what does not fit.
    """
    catalogs = catalogs or load_catalogs()
    base_dir = base_dir if base_dir is not None else Path.cwd()
    plan = size_stack(stack, catalogs, base_dir)
    if lint:
        findings = lint_stack(stack, base_dir=base_dir, catalogs=catalogs, plan=plan)
        plan.findings = [f.to_json() for f in findings]
        plan.problems += [f"{f.id} {f.where}: {f.message}; fix: {f.fix}" for f in findings
                          if f.severity == "error" and f.id != "TS010"]
    return plan
