"""Render: a pure function from a validated spec to ``{relative path: bytes}``.

Nothing here touches the output directory; writing is :mod:`generator.write`'s job, so dry runs,
diffs and drift checks come for free. (Renderers are imported inside :func:`render` because the
spec itself imports settings classes from this package.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from generator.render.options import RenderOptions

if TYPE_CHECKING:
    from generator.spec import Stack

__all__ = ["RenderOptions", "render"]


def render(stack: Stack, options: RenderOptions) -> dict[str, bytes]:
    from generator.render.model_repo import render_model_repos

    files = render_model_repos(stack, options)
    return dict(sorted(files.items()))
