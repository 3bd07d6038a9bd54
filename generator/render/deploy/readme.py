"""``deploy/README.md``: what an operator must provide before applying the rendered manifests.

The Secrets to create, what goes on which volume, and the spec paths a pod would not find; the
same problems :func:`generator.render.deploy.paths.kubernetes_path_problems` reports.
"""

from __future__ import annotations

from generator.render.deploy.k8s import gpu_kinds, router_api_keys
from generator.render.deploy.paths import ArtifactPath, kubernetes_path_problems
from generator.render.deploy.topology import Topology
from generator.render.jinja import render_template
from generator.resources import DEPLOY_ROOT

__all__ = ["README", "render_readme"]

README = "deploy/README.md"


def render_readme(topo: Topology, artifacts: list[ArtifactPath], header: str) -> bytes:
    deploy = topo.stack.deploy
    secrets = [f"`{deploy.restricted_api_secret}` with key `value`: the `{deploy.restricted_api_header}` header value "
               "that unlocks Triton's management APIs"]
    keys = router_api_keys(topo.stack)
    if keys is not None:
        secrets.append(f"`{keys.secret}` with key `api-keys`: the router's API keys")
    if deploy.storage.sync is not None and deploy.storage.sync.credentials_secret is not None:
        secrets.append(f"`{deploy.storage.sync.credentials_secret}`: environment of the sync init container (e.g. AWS_*)")
    storage = deploy.storage
    mount = storage.artifacts_mount_path
    if storage.kind == "pvc":
        note = (f"claim `{storage.models_claim}` holds `model_repos/` as rendered; claim `{storage.artifacts_claim}` "
                f"holds one folder per GPU kind, each mounted at `{mount}`.")
    elif storage.kind == "host_path":
        note = (f"node folder `{storage.models_host_path}` holds `model_repos/`; `{storage.artifacts_host_path}` holds "
                f"one folder per GPU kind, each mounted at `{mount}`.")
    else:
        assert storage.sync is not None
        note = (f"init containers copy `{storage.sync.source}/model_repos/<pool>/` to `/models` and "
                f"`{storage.sync.source}/artifacts/<gpu kind>/` to `{mount}`.")
    context = {
        "header": header,
        "stack": topo.stack.name,
        "namespace": topo.namespace,
        "overlays": [kind.name for kind in gpu_kinds(topo.stack)],
        "secrets": secrets,
        "storage_note": note,
        "lws_pools": [pool.name for pool in topo.pools if pool.multi_node],
        "problems": kubernetes_path_problems(topo.stack, artifacts)
        + [p.renumbered_ids_problem for p in topo.pools if p.renumbered_ids_problem],
        "monitor_labels": deploy.prometheus.service_monitor_labels,
        "prometheus_labels": deploy.prometheus.pod_labels,
        "prometheus_namespace": deploy.prometheus.namespace,
    }
    return render_template(DEPLOY_ROOT / "templates", "README.md.jinja", context).encode("utf-8")
