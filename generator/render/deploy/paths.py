"""Where the engines and tokenizers a spec names appear inside the containers.

An absolute ``engine_dir`` / ``tokenizer_dir`` is a path on the serving node and stays as it is. A
relative one is relative to the spec file; the model repository renderer rewrites it relative to
each Triton model's directory, so inside a container (repository at ``/models``) it resolves to
``normpath(/models/<model>/<rewritten>)``. Compose bind-mounts each such directory there;
Kubernetes pods only see what lies under ``deploy.storage.artifacts_mount_path``.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from generator.render.deploy.topology import CONFIG_MOUNT, MODELS_MOUNT
from generator.render.options import RenderOptions
from generator.spec import Stack, uses_llm_api

__all__ = ["ArtifactPath", "artifact_paths", "kubernetes_path_problems"]


@dataclass(frozen=True)
class ArtifactPath:
    model: str
    field: str  # "engine_dir", "checkpoint_dir" (LLM-API models) or "tokenizer_dir"
    spec_value: str
    container_path: str  # where Triton's models look (relative paths: from /models/<model>)
    router_path: str  # where the router looks (relative paths: from routes.yaml in /etc/tritonstack)
    host_path: str  # absolute, or relative to deploy/compose/ in the output


def artifact_paths(stack: Stack, options: RenderOptions) -> list[ArtifactPath]:
    found: dict[tuple[str, str], ArtifactPath] = {}
    for model in stack.models:
        # The LLM-API model loads the checkpoint itself (model.yaml's model:), so it must be mounted too.
        checkpoint = model.checkpoint_dir if uses_llm_api(stack, model) else None
        fields = (("engine_dir", model.engine_dir), ("checkpoint_dir", checkpoint), ("tokenizer_dir", model.tokenizer_dir))
        for field, value in fields:
            if value is None:
                continue
            if os.path.isabs(value):
                container = router = host = posixpath.normpath(value)
            else:
                # Any pool works for the rewrite: every pool's repository has the same depth.
                rewritten = options.from_output(value, "model_repos/pool/model")
                container = posixpath.normpath(posixpath.join(MODELS_MOUNT, "model", rewritten))
                # routes.yaml carries tokenizer paths relative to its own folder (out/router/).
                router = posixpath.normpath(posixpath.join(CONFIG_MOUNT, options.from_output(value, "router")))
                host = options.from_output(value, "deploy/compose")
            found[(model.name, field)] = ArtifactPath(model.name, field, value, container, router, host)
    return list(found.values())


def kubernetes_path_problems(stack: Stack, paths: list[ArtifactPath]) -> list[str]:
    """Paths a Kubernetes pod would not find: everything outside the artifacts mount."""
    root = stack.deploy.storage.artifacts_mount_path.rstrip("/") + "/"
    return [
        f"models[{p.model}].{p.field} {p.spec_value!r} is {p.container_path} in the pods, outside the artifacts "
        f"volume ({root}); use an absolute path under it or set deploy.storage.artifacts_mount_path"
        for p in paths
        if not p.container_path.startswith(root)
    ]
