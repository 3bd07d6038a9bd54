"""Render: a pure function from a validated spec to ``{relative path: bytes}``.

Nothing here touches the output directory; writing is :mod:`generator.write`'s job, so dry runs,
diffs and drift checks come for free.

Output layout: ``model_repos/<pool>/`` (Triton), ``router/routes.yaml``, ``monitoring/``
(exporter config, Prometheus config and rules, Grafana dashboards) and ``deploy/`` (Kubernetes
and compose), the last built from the others so ports and names line up.
"""

from __future__ import annotations

from generator.render.deploy import render_deploy
from generator.render.model_repo import render_model_repos
from generator.render.monitoring import render_monitoring
from generator.render.options import RenderOptions
from generator.render.routes import render_routes
from generator.spec import Stack

__all__ = ["RenderOptions", "render"]


def render(stack: Stack, options: RenderOptions) -> dict[str, bytes]:
    files = render_model_repos(stack, options)
    files.update(render_routes(stack, options))
    files.update(render_monitoring(stack))
    files.update(render_deploy(stack, files, options))
    return dict(sorted(files.items()))
