"""Kubernetes manifests: a kustomize base, one overlay per GPU kind, and example Argo CD Applications.

Output (relative to the output dir)::

    deploy/k8s/base/{kustomization,namespace,storage,pool-<pool>,router,exporter}.yaml
    deploy/k8s/overlays/<gpu kind>/{kustomization,patch-<workload>}.yaml
    deploy/k8s/base/monitoring.yaml            PrometheusRule, dashboard ConfigMap / GrafanaDashboard
    deploy/k8s/base/autoscaling.yaml           KEDA ScaledObjects (deploy.autoscaling)
    deploy/k8s/base/gateway.yaml               InferencePools, pickers, HTTPRoute (deploy.gateway)
    deploy/k8s/base/disaggregated-<set>.yaml   one DisaggregatedSet per prefill/decode pair (deploy.disaggregated_set)
    deploy/k8s/argocd/<gpu kind>.yaml          (when deploy.gitops.repo_url is set)
    deploy/k8s/flux/<gpu kind>.yaml            (likewise: a Flux Kustomization)

Names the rest of the stack relies on: each pool's headless Service ``<pool>-headless`` (the
router's and exporter's DNS discovery), Triton ports from ``deploy.triton_ports``, and the router
and exporter as ``router`` / ``exporter``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from generator.errors import RenderError
from generator.naming import headless_service
from generator.render.deploy.gateway import (
    ENGINE_LABEL,
    ENGINE_TYPE,
    gateway_objects,
    gateway_pools,
    sidecar_routes,
    with_router_sidecar,
)
from generator.render.deploy.operations import (
    ScaleTarget,
    dashboard_objects,
    flux_kustomization,
    prometheus_rule,
    scaled_objects,
)
from generator.render.deploy.pods import ApiKeysRef, PodParts, lws_pods, tool_pod, triton_pod
from generator.render.deploy.templates import K8S_TEMPLATES, render_yaml
from generator.render.deploy.topology import (
    EXPORTER_CONFIG_FILE,
    EXPORTER_HEALTH_PATH,
    EXPORTER_NAME,
    ROUTER_CONFIG_FILE,
    ROUTER_HEALTH_PATH,
    ROUTER_NAME,
    ROUTER_READY_PATH,
    PoolTopology,
    Topology,
    exporter_args,
    router_args,
)
from generator.spec import Stack
from generator.spec.deploy import GpuKind

__all__ = ["K8S_ROOT", "Workload", "config_map_name", "gpu_kinds", "render_kubernetes"]

K8S_ROOT = "deploy/k8s"
Json = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """A rendered workload an overlay patches: its kind, name and pod parts, and where the pod spec sits."""

    kind: str
    name: str
    group_version: tuple[str, str]
    pods: tuple[tuple[str, PodParts], ...]  # (JSON pointer of the pod spec, parts)


def gpu_kinds(stack: Stack) -> list[GpuKind]:
    """The overlays to render: the spec's list, or one named after target.gpu (else 'default')."""
    if stack.deploy.gpu_kinds:
        return list(stack.deploy.gpu_kinds)
    return [GpuKind(name=stack.target.gpu or "default")]


def config_map_name(component: str, content: bytes) -> str:
    return f"{component}-config-{hashlib.sha256(content).hexdigest()[:10]}"


def render_kubernetes(
    topo: Topology, routes: bytes, exporter_config: bytes, monitoring: Mapping[str, bytes], header: str
) -> dict[str, bytes]:
    """``monitoring`` is the monitoring stage's output (rule files and dashboards under monitoring/)."""
    stack = topo.stack
    base = f"{K8S_ROOT}/base"
    files: dict[str, bytes] = {}
    resources: list[str] = ["namespace.yaml"]
    common = topo.common_labels()
    files[f"{base}/namespace.yaml"] = render_yaml(
        K8S_TEMPLATES, "namespace.yaml.jinja", {"header": header, "namespace": topo.namespace, "labels": common}
    )
    claims = _claims(stack)
    if claims:
        resources.append("storage.yaml")
        files[f"{base}/storage.yaml"] = render_yaml(
            K8S_TEMPLATES,
            "storage.yaml.jinja",
            {"header": header, "namespace": topo.namespace, "labels": common, "claims": claims},
        )
    workloads: list[Workload] = []
    sets = _disaggregated_sets(topo)
    in_sets = {pool.name for pair in sets.values() for pool in pair}
    sidecars = {pool.name: _sidecar_config(routes, pool.name) for pool in gateway_pools(topo)}
    scale_targets: dict[str, ScaleTarget] = {}
    for pool in topo.pools:
        text, workload = _pool(topo, pool, header, pool.name not in in_sets, sidecars.get(pool.name))
        files[f"{base}/pool-{pool.name}.yaml"] = text
        resources.append(f"pool-{pool.name}.yaml")
        if workload is not None:
            workloads.append(workload)
            scale_targets[pool.name] = ScaleTarget("/".join(workload.group_version), workload.kind, workload.name)
    for set_name, pair in sets.items():
        text, workload = _disaggregated_set(topo, set_name, pair, sidecars, header)
        files[f"{base}/disaggregated-{set_name}.yaml"] = text
        resources.append(f"disaggregated-{set_name}.yaml")
        workloads.append(workload)
        for pool in pair:
            # LWS >= 0.9 creates a DisaggregatedSetRoleScaler <set>-<role> per External role.
            scale_targets[pool.name] = ScaleTarget(DS_API, "DisaggregatedSetRoleScaler", f"{set_name}-{pool.name}")
    for component, text, workload in (_router(topo, routes, header), _exporter(topo, exporter_config, header)):
        files[f"{base}/{component}.yaml"] = text
        resources.append(f"{component}.yaml")
        workloads.append(workload)
    extra = _operations(topo, monitoring, scale_targets, sidecars)
    for filename, (note, objects) in extra.items():
        if objects:
            files[f"{base}/{filename}"] = render_yaml(
                K8S_TEMPLATES, "objects.yaml.jinja", {"header": header, "note": note, "objects": objects}
            )
            resources.append(filename)
    files[f"{base}/kustomization.yaml"] = render_yaml(
        K8S_TEMPLATES,
        "kustomization.yaml.jinja",
        {"header": header, "namespace": topo.namespace, "resources": resources},
    )
    for kind in gpu_kinds(stack):
        files.update(_overlay(topo, kind, workloads, header))
        if stack.deploy.gitops.repo_url is not None:
            files[f"{K8S_ROOT}/argocd/{kind.name}.yaml"] = _application(topo, kind, header)
            files[f"{K8S_ROOT}/flux/{kind.name}.yaml"] = flux_kustomization(topo, kind, _overlay_path(topo, kind), header)
    return files


DS_API = "disaggregatedset.x-k8s.io/v1"
SIDECAR_COMPONENT = "openai-sidecar"


def _operations(
    topo: Topology, monitoring: Mapping[str, bytes], targets: dict[str, ScaleTarget], sidecars: Mapping[str, tuple[str, bytes]]
) -> dict[str, tuple[str, list[Json]]]:
    """Base files of operations objects: (note, objects) per file name; empty lists are not written."""
    stack = topo.stack
    settings = stack.deploy.monitoring
    monitoring_objects: list[Json] = []
    if settings.prometheus_rules:
        monitoring_objects.append(prometheus_rule(topo, monitoring))
    monitoring_objects += dashboard_objects(topo, monitoring)
    scaling = scaled_objects(topo, targets) if stack.deploy.autoscaling is not None else []
    gateway = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {**topo.common_labels(), **topo.selector_labels(SIDECAR_COMPONENT, pool)}},
            "data": {ROUTER_CONFIG_FILE: content.decode("utf-8")},
        }
        for pool, (name, content) in sidecars.items()
    ] + gateway_objects(topo)
    return {
        "monitoring.yaml": (
            "The rules promtool tests (monitoring/rules) and the dashboards, for the Prometheus Operator and Grafana.",
            monitoring_objects,
        ),
        "autoscaling.yaml": ("KEDA ScaledObjects on the exporter's series; needs KEDA (https://keda.sh).", scaling),
        "gateway.yaml": (
            (
                "Gateway API inference routing; needs the inference extension CRDs, a Gateway that implements "
                "them, and Body-Based Routing (X-Gateway-Model-Name)."
            ),
            gateway,
        ),
    }


def _sidecar_config(routes: bytes, pool: str) -> tuple[str, bytes]:
    content = sidecar_routes(routes, pool)
    return config_map_name(f"{pool}-sidecar", content), content


def _disaggregated_sets(topo: Topology) -> dict[str, tuple[PoolTopology, PoolTopology]]:
    """deploy.disaggregated_set: each prefill pool and its decode partner, named <prefill>-<decode>."""
    stack = topo.stack
    if not stack.deploy.disaggregated_set:
        return {}
    by_name = {pool.name: pool for pool in topo.pools}
    sets = {}
    for pool in topo.pools:
        if pool.pool.role != "prefill":
            continue
        partner = stack.partner_of(pool.pool)
        assert partner is not None  # the spec's cross-checks guarantee one
        pair = (pool, by_name[partner.name])
        for member in pair:
            if member.multi_node:
                # The leader's MPI hostfile names the LeaderWorkerSet, whose name a DisaggregatedSet
                # generates per revision (<set>-<slice>-<revision>-<role>).
                raise RenderError(
                    f"deploy.disaggregated_set: pool {member.name} spans {member.nodes} nodes; multi-node pools "
                    "cannot be DisaggregatedSet roles yet. Unset disaggregated_set or fit a replica on one node"
                )
        sets[f"{pool.name}-{partner.name}"] = pair
    return sets


def _claims(stack: Stack) -> list[Json]:
    storage = stack.deploy.storage
    if storage.kind != "pvc" or not storage.create_claims:
        return []
    return [
        {"name": name, "size": size, "access_mode": storage.access_mode, "storage_class": storage.storage_class}
        for name, size in ((storage.models_claim, storage.models_size), (storage.artifacts_claim, storage.artifacts_size))
    ]


def _component_labels(topo: Topology, component: str, pool: str | None = None, extra: Json | None = None) -> Json:
    return {**topo.common_labels(), **topo.selector_labels(component, pool), **(extra or {})}


def _pool_pod_labels(topo: Topology, pool: PoolTopology) -> Json:
    role: Json = {"tritonstack.io/role": pool.pool.role}
    if pool.name in {p.name for p in gateway_pools(topo)}:
        role[ENGINE_LABEL] = ENGINE_TYPE  # how the endpoint picker reads this pod's metrics
    return _component_labels(topo, "tritonserver", pool.name, role)


def _single_pod(topo: Topology, pool: PoolTopology, sidecar: tuple[str, bytes] | None) -> PodParts:
    parts = triton_pod(topo, pool)
    return parts if sidecar is None else _add_sidecar(topo, parts, sidecar[0])


def _add_sidecar(topo: Topology, parts: PodParts, config_map: str) -> PodParts:
    return with_router_sidecar(
        topo, parts, router_args(topo.stack), config_map, (ROUTER_READY_PATH, ROUTER_HEALTH_PATH), router_api_keys(topo.stack)
    )


def _pool(
    topo: Topology, pool: PoolTopology, header: str, with_workload: bool, sidecar: tuple[str, bytes] | None
) -> tuple[bytes, Workload | None]:
    """The pool's workload (unless a DisaggregatedSet carries it), headless Service, PDB,
    NetworkPolicy and ServiceMonitor."""
    stack = topo.stack
    selector = topo.pool_selector(pool)
    labels = _pool_pod_labels(topo, pool)
    serving = {"tritonstack.io/serving": "true"}
    context: Json = {
        "header": header,
        "name": pool.name,
        "namespace": topo.namespace,
        "labels": labels,
        "replicas": pool.pool.replicas,
        "nodes": pool.nodes,
        "headless": headless_service(pool.name),
        "selector": selector,
        "serving_selector": {**selector, **serving},
        "service_labels": labels,
        "service_match": selector,
        "monitor_labels": {**labels, **stack.deploy.prometheus.service_monitor_labels},
        "service_ports": _service_ports(stack),
        "ingress": _pool_ingress(topo, pool, sidecar is not None),
        "extra_peers_note": _peers_note(topo, pool),
        "scrape_interval": stack.deploy.prometheus.scrape_interval,
    }
    workload: Workload | None
    if not with_workload:
        context.update(workload_kind="none")
        workload = None
    elif pool.multi_node:
        leader, worker = lws_pods(topo, pool, pool.name)
        if sidecar is not None:
            leader = _add_sidecar(topo, leader, sidecar[0])
        context.update(
            workload_kind="LeaderWorkerSet",
            leader_pod_labels={**labels, **serving},
            worker_pod_labels=labels,
            leader_pod=leader.spec,
            worker_pod=worker.spec,
        )
        lws = "/spec/leaderWorkerTemplate"
        pods = ((f"{lws}/leaderTemplate/spec", leader), (f"{lws}/workerTemplate/spec", worker))
        workload = Workload("LeaderWorkerSet", pool.name, ("leaderworkerset.x-k8s.io", "v1"), pods)
    else:
        parts = _single_pod(topo, pool, sidecar)
        kind = stack.deploy.pool_workload
        context.update(workload_kind=kind, pod_labels={**labels, **serving}, pod=parts.spec)
        workload = Workload(kind, pool.name, ("apps", "v1"), (("/spec/template/spec", parts),))
    return render_yaml(K8S_TEMPLATES, "pool.yaml.jinja", context), workload


def _service_ports(stack: Stack) -> list[Json]:
    ports = stack.deploy.triton_ports
    return [
        {"name": name, "port": number, "targetPort": name, "protocol": "TCP"}
        for name, number in (("http", ports.http), ("grpc", ports.grpc), ("metrics", ports.metrics))
    ]


def _prometheus_peer(topo: Topology) -> Json:
    prometheus = topo.stack.deploy.prometheus
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus.namespace}},
        "podSelector": {"matchLabels": dict(prometheus.pod_labels)},
    }


def _pool_ingress(topo: Topology, pool: PoolTopology, sidecar: bool = False) -> list[Json]:
    ports = topo.stack.deploy.triton_ports
    all_ports = [{"protocol": "TCP", "port": p} for p in (ports.http, ports.grpc, ports.metrics)]
    rules: list[Json] = [
        {
            "from": [
                {"podSelector": {"matchLabels": topo.selector_labels(ROUTER_NAME)}},
                {"podSelector": {"matchLabels": topo.selector_labels(EXPORTER_NAME)}},
            ],
            "ports": all_ports,
        },
        {"from": [_prometheus_peer(topo)], "ports": [{"protocol": "TCP", "port": ports.metrics}]},
    ]
    peers = []
    partner = topo.stack.partner_of(pool.pool)
    if partner is not None:
        # KV cache moves engine to engine between the prefill and decode pools (UCX/NIXL choose their
        # own ports), so the partner pool may reach any port.
        peers.append({"podSelector": {"matchLabels": topo.selector_labels("tritonserver", partner.name)}})
    if pool.multi_node:
        # MPI (ssh) and NCCL between the leader and workers of a replica.
        peers.append({"podSelector": {"matchLabels": topo.pool_selector(pool)}})
    if peers:
        rules.append({"from": peers})
    if sidecar:
        # The gateway's data plane (in its own namespace) sends OpenAI requests to the sidecar, which
        # checks API keys like the router; the pool's endpoint picker reads Triton's metrics.
        rules.append({"ports": [{"protocol": "TCP", "port": topo.stack.router.port}]})
        rules.append(
            {
                "from": [{"podSelector": {"matchLabels": topo.selector_labels("endpoint-picker", pool.name)}}],
                "ports": [{"protocol": "TCP", "port": ports.metrics}],
            }
        )
    return rules


def _peers_note(topo: Topology, pool: PoolTopology) -> str:
    notes = []
    partner = topo.stack.partner_of(pool.pool)
    if partner is not None:
        notes.append(f"; the {partner.role} pool {partner.name} reaches every port (KV cache transfer)")
    if pool.multi_node:
        notes.append("; pods of one replica reach each other (MPI, NCCL)")
    return "".join(notes)


def _tool(
    topo: Topology,
    *,
    component: str,
    config_file: str,
    content: bytes,
    args: list[str],
    port: int,
    replicas: int,
    probes: tuple[str, str],
    api_keys: ApiKeysRef | None,
    with_artifacts: bool,
    ingress: list[Json],
    header: str,
) -> tuple[str, bytes, Workload]:
    stack = topo.stack
    config_map = config_map_name(component, content)
    parts = tool_pod(topo, component, args, port, config_map, probes, api_keys, with_artifacts)
    labels = _component_labels(topo, component)
    selector = topo.selector_labels(component)
    autoscaling = stack.deploy.router.autoscaling if component == ROUTER_NAME else None
    context = {
        "header": header,
        "name": component,
        "namespace": topo.namespace,
        "labels": labels,
        "config_map": config_map,
        "config_data": {config_file: content.decode("utf-8")},
        "sync_wave": "-1",
        "replicas": replicas,
        "autoscaling": autoscaling,
        "selector": selector,
        "pod_labels": labels,
        "pod": parts.spec,
        "service_labels": labels,
        "service_match": selector,
        "service_type": stack.deploy.router.service_type if component == ROUTER_NAME else "ClusterIP",
        "port": port,
        "pdb": replicas > 1 or autoscaling is not None,
        "ingress": ingress,
        "monitor_labels": {**labels, **stack.deploy.prometheus.service_monitor_labels},
        "scrape_interval": stack.deploy.prometheus.scrape_interval,
    }
    workload = Workload("Deployment", component, ("apps", "v1"), (("/spec/template/spec", parts),))
    return component, render_yaml(K8S_TEMPLATES, "tool.yaml.jinja", context), workload


def router_api_keys(stack: Stack) -> ApiKeysRef | None:
    """The router reads keys from where its settings say (api_keys_env / api_keys_file); without
    either it runs open, and no Secret is referenced."""
    router = stack.router
    if router.api_keys_env is None and router.api_keys_file is None:
        return None
    return ApiKeysRef(stack.deploy.api_keys_secret, router.api_keys_env, router.api_keys_file)


def _router(topo: Topology, routes: bytes, header: str) -> tuple[str, bytes, Workload]:
    stack = topo.stack
    port = stack.router.port
    # The router is the front door: any client may reach its port (API keys guard it).
    ingress = [{"ports": [{"protocol": "TCP", "port": port}]}]
    return _tool(
        topo,
        component=ROUTER_NAME,
        config_file=ROUTER_CONFIG_FILE,
        content=routes,
        args=router_args(stack),
        port=port,
        replicas=stack.deploy.router.replicas,
        probes=(ROUTER_READY_PATH, ROUTER_HEALTH_PATH),
        api_keys=router_api_keys(stack),
        with_artifacts=True,
        ingress=ingress,
        header=header,
    )


def _exporter(topo: Topology, config: bytes, header: str) -> tuple[str, bytes, Workload]:
    stack = topo.stack
    port = stack.exporter.port
    ingress = [{"from": [_prometheus_peer(topo)], "ports": [{"protocol": "TCP", "port": port}]}]
    return _tool(
        topo,
        component=EXPORTER_NAME,
        config_file=EXPORTER_CONFIG_FILE,
        content=config,
        args=exporter_args(stack),
        port=port,
        replicas=1,
        probes=(EXPORTER_HEALTH_PATH, EXPORTER_HEALTH_PATH),
        api_keys=None,
        with_artifacts=False,
        ingress=ingress,
        header=header,
    )


def _overlay(topo: Topology, kind: GpuKind, workloads: list[Workload], header: str) -> dict[str, bytes]:
    root = f"{K8S_ROOT}/overlays/{kind.name}"
    files: dict[str, bytes] = {}
    patches = []
    for workload in workloads:
        operations = _patch_operations(topo, kind, workload)
        if not operations:
            continue
        filename = f"patch-{workload.kind.lower()}-{workload.name}.yaml"
        files[f"{root}/{filename}"] = render_yaml(
            K8S_TEMPLATES, "patch.yaml.jinja", {"header": header, "operations": operations}
        )
        group, version = workload.group_version
        patches.append({"path": filename, "target": {"group": group, "version": version, "kind": workload.kind, "name": workload.name}})
    files[f"{root}/kustomization.yaml"] = render_yaml(
        K8S_TEMPLATES, "overlay.yaml.jinja", {"header": header, "gpu": kind.name, "patches": patches}
    )
    return files


def _patch_operations(topo: Topology, kind: GpuKind, workload: Workload) -> list[Json]:
    """JSON patches (RFC 6902) by index: strategic merge does not reach into CRDs such as LeaderWorkerSet."""
    storage = topo.stack.deploy.storage
    operations: list[Json] = []
    for pointer, parts in workload.pods:
        if parts.uses_gpus:
            selector = dict(kind.node_selector)
            if kind.node_product is not None:
                selector["nvidia.com/gpu.product"] = kind.node_product
            if selector:
                operations.append({"op": "add", "path": f"{pointer}/nodeSelector", "value": selector})
        if storage.kind == "sync":
            if parts.sync_container is not None:
                path = f"{pointer}/initContainers/{parts.sync_container}/env/0/value"
                operations.append({"op": "replace", "path": path, "value": kind.name})
        else:
            for key, container, mount in parts.artifacts_mounts:
                path = f"{pointer}/{key}/{container}/volumeMounts/{mount}/subPath"
                operations.append({"op": "add", "path": path, "value": kind.name})
    return operations


def _overlay_path(topo: Topology, kind: GpuKind) -> str:
    gitops = topo.stack.deploy.gitops
    return f"{gitops.path.strip('/')}/{K8S_ROOT}/overlays/{kind.name}".lstrip("/")


def _disaggregated_set(
    topo: Topology, name: str, pair: tuple[PoolTopology, PoolTopology], sidecars: Mapping[str, tuple[str, bytes]], header: str
) -> tuple[bytes, Workload]:
    """One DisaggregatedSet (LWS >= 0.9) whose roles are the pair's pools, each a one-pod LWS group.
    With deploy.autoscaling the roles scale externally (a KEDA ScaledObject per role)."""
    stack = topo.stack
    roles = []
    pods = []
    for index, pool in enumerate(pair):
        parts = _single_pod(topo, pool, sidecars.get(pool.name))
        role: Json = {"name": pool.name}
        if stack.deploy.autoscaling is not None:
            role["scaling"] = {"mode": "External"}
        role["spec"] = {
            "replicas": pool.pool.replicas,
            "leaderWorkerTemplate": {
                "size": 1,
                "workerTemplate": {
                    "metadata": {"labels": {**_pool_pod_labels(topo, pool), "tritonstack.io/serving": "true"}},
                    "spec": parts.spec,
                },
            },
        }
        roles.append(role)
        pods.append((f"/spec/roles/{index}/spec/leaderWorkerTemplate/workerTemplate/spec", parts))
    document = {
        "apiVersion": DS_API,
        "kind": "DisaggregatedSet",
        "metadata": {"name": name, "labels": topo.common_labels()},
        "spec": {"roles": roles},
    }
    note = (
        "Prefill and decode pools as one DisaggregatedSet; needs LeaderWorkerSet >= 0.9 "
        "(https://github.com/kubernetes-sigs/lws) with the DisaggregatedSet controller."
    )
    text = render_yaml(K8S_TEMPLATES, "objects.yaml.jinja", {"header": header, "note": note, "objects": [document]})
    return text, Workload("DisaggregatedSet", name, ("disaggregatedset.x-k8s.io", "v1"), tuple(pods))


def _application(topo: Topology, kind: GpuKind, header: str) -> bytes:
    gitops = topo.stack.deploy.gitops
    return render_yaml(
        K8S_TEMPLATES,
        "argocd-application.yaml.jinja",
        {
            "header": header,
            "gpu": kind.name,
            "name": f"{topo.stack.name}-{kind.name}",
            "argocd_namespace": gitops.argocd_namespace,
            "labels": topo.common_labels(),
            "project": gitops.project,
            "repo_url": gitops.repo_url,
            "revision": gitops.revision,
            "path": _overlay_path(topo, kind),
            "namespace": topo.namespace,
        },
    )
