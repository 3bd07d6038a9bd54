"""Rendered stacks on real tritonservers: start one from a spec, and the handle the tests use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generator.pipeline import build
from generator.runtime.launcher import Launcher, LaunchSettings, Replica
from generator.runtime.tritonserver import find_tritonserver
from generator.spec import Stack
from generator.write import write_output

__all__ = ["RunningStack", "start_stack"]


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
