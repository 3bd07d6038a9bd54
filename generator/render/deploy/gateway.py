"""Gateway API Inference Extension routing (``deploy.gateway``): what makes Triton pods an InferencePool.

The endpoint picker (EPP, llm-d/llm-d-router) expects each pod of a pool to serve the OpenAI API
on the pool's target port and Prometheus metrics it knows; for model-server type
``triton-tensorrt-llm`` it reads ``nv_trt_llm_request_metrics{request_type=waiting|scheduled}`` and
``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction|tokens_per|max}``
(pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go). Triton serves neither the
OpenAI API nor its metrics on one port, so:

* every pod a client enters through (aggregated and decode pools) gets the tritonstack router as a
  sidecar that speaks OpenAI on ``router.port`` to its own Triton over loopback (a decode pool's
  sidecar reaches its prefill pool through that pool's headless Service, as the central router does);
* the InferencePool targets that port; the picker's ``metrics-data-source`` scrapes Triton's metrics
  port (its ``port`` parameter, llm-d/llm-d-router#2290, first released in v0.10.0), and pods carry
  ``llm-d.ai/engine-type: triton-tensorrt-llm``;
* the HTTPRoute sends each model (the X-Gateway-Model-Name header Body-Based Routing sets from the
  body) to the InferencePool of the pool serving it; prefill pools get no InferencePool (the decode
  pool's sidecar calls them).
"""

from __future__ import annotations

from typing import Any

from generator import yamlio
from generator.errors import RenderError
from generator.render.deploy.pods import ApiKeysRef, PodParts, tool_pod
from generator.render.deploy.topology import PoolTopology, Topology, image_with_registry
from generator.router.config import parse_routes

__all__ = [
    "ENGINE_LABEL",
    "ENGINE_TYPE",
    "SIDECAR",
    "gateway_objects",
    "gateway_pools",
    "sidecar_routes",
    "with_router_sidecar",
]

Json = dict[str, Any]
ENGINE_LABEL = "llm-d.ai/engine-type"
ENGINE_TYPE = "triton-tensorrt-llm"
SIDECAR = "openai-sidecar"
MODEL_HEADER = "X-Gateway-Model-Name"
EPP_GRPC_PORT = 9002
EPP_HEALTH_PORT = 9003
EPP_METRICS_PORT = 9090
EPP_CONFIG_FILE = "epp-config.yaml"
# The picker holds no request state; the gateway retries it (FailOpen) while it restarts.
EPP_TERMINATION_GRACE_S = 130
INFERENCE_GROUP = "inference.networking.k8s.io"


def gateway_pools(topo: Topology) -> list[PoolTopology]:
    """The pools clients enter: aggregated and decode pools (a prefill pool is called by its partner's sidecar)."""
    if topo.stack.deploy.gateway is None:
        return []
    return [pool for pool in topo.pools if pool.pool.role != "prefill"]


def sidecar_routes(routes: bytes, pool: str) -> bytes:
    """routes.yaml for ``pool``'s sidecar: its own Triton on loopback, every other pool as rendered."""
    document = yamlio.safe_load(routes.decode("utf-8"))
    entry = document["pools"][pool]
    dns = entry.pop("dns")
    entry["endpoints"] = [{"host": "127.0.0.1", "http": dns["http"], "grpc": dns["grpc"], "metrics": dns["metrics"]}]
    text = "# The sidecar router of one pool's pods; rendered by tritonstack from routes.yaml.\n" + yamlio.safe_dump(
        document, sort_keys=False, default_flow_style=False
    )
    parse_routes(text, f"{pool} sidecar routes.yaml")  # the router must read what we write
    return text.encode("utf-8")


def with_router_sidecar(
    topo: Topology,
    parts: PodParts,
    args: list[str],
    config_map: str,
    probes: tuple[str, str],
    api_keys: ApiKeysRef | None,
) -> PodParts:
    """``parts`` plus the router container (and the volumes it needs that the pod lacks)."""
    stack = topo.stack
    router = tool_pod(topo, "router", args, stack.router.port, config_map, probes, api_keys, True)
    container = {**router.spec["containers"][0], "name": SIDECAR}
    spec = {**parts.spec}
    have = {volume["name"] for volume in spec["volumes"]}
    spec["volumes"] = [*spec["volumes"], *(v for v in router.spec["volumes"] if v["name"] not in have)]
    spec["containers"] = [*spec["containers"], container]
    mounts = tuple(
        ("containers", index, mount_index)
        for index, c in enumerate(spec["containers"])
        for mount_index, mount in enumerate(c.get("volumeMounts", []))
        if mount["name"] == "artifacts"
    )
    return PodParts(spec=spec, artifacts_mounts=mounts, sync_container=parts.sync_container, uses_gpus=parts.uses_gpus)


def _epp_name(pool: str) -> str:
    return f"{pool}-epp"


def _epp_config(topo: Topology) -> str:
    """EndpointPickerConfig (llm-d.ai/v1alpha1): the chart's default scorers, Triton's metrics port."""
    config = {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [
            {"type": "queue-scorer"},
            {"type": "kv-cache-utilization-scorer"},
            {"type": "prefix-cache-scorer"},
            {
                "type": "metrics-data-source",
                "parameters": {"scheme": "http", "path": "/metrics", "port": topo.stack.deploy.triton_ports.metrics},
            },
            {"type": "core-metrics-extractor", "parameters": {"defaultEngine": ENGINE_TYPE}},
        ],
        "schedulingProfiles": [
            {
                "name": "default",
                "plugins": [
                    {"pluginRef": "queue-scorer", "weight": 2},
                    {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                    {"pluginRef": "prefix-cache-scorer", "weight": 3},
                ],
            }
        ],
    }
    return yamlio.safe_dump(config, sort_keys=False, default_flow_style=False)


def gateway_objects(topo: Topology) -> list[Json]:
    """InferencePools, pickers (ServiceAccount, Role, RoleBinding, ConfigMap, Deployment, Service),
    InferenceObjectives and the HTTPRoute."""
    gateway = topo.stack.deploy.gateway
    if gateway is None:
        return []
    stack = topo.stack
    common = topo.common_labels()
    objects: list[Json] = []
    pool_of_model: dict[str, str] = {}
    for pool in gateway_pools(topo):
        for model in pool.pool.models:
            pool_of_model.setdefault(model, pool.name)
        epp = _epp_name(pool.name)
        epp_labels = {**common, **topo.selector_labels("endpoint-picker", pool.name)}
        epp_selector = topo.selector_labels("endpoint-picker", pool.name)
        objects.append(
            {
                "apiVersion": f"{INFERENCE_GROUP}/v1",
                "kind": "InferencePool",
                "metadata": {"name": pool.name, "labels": dict(common)},
                "spec": {
                    "selector": {"matchLabels": {**topo.pool_selector(pool), "tritonstack.io/serving": "true"}},
                    "targetPorts": [{"number": stack.router.port}],
                    "endpointPickerRef": {
                        "name": epp,
                        "port": {"number": EPP_GRPC_PORT},
                        "failureMode": gateway.failure_mode,
                    },
                },
            }
        )
        objects += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": epp, "labels": epp_labels}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": epp, "labels": epp_labels},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]},
                    {"apiGroups": [INFERENCE_GROUP], "resources": ["inferencepools"], "verbs": ["get", "watch", "list"]},
                    {
                        "apiGroups": ["llm-d.ai"],
                        "resources": ["inferenceobjectives", "inferencemodelrewrites"],
                        "verbs": ["get", "watch", "list"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": epp, "labels": epp_labels},
                "subjects": [{"kind": "ServiceAccount", "name": epp, "namespace": topo.namespace}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": epp},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": epp, "labels": epp_labels},
                "data": {EPP_CONFIG_FILE: _epp_config(topo)},
            },
            _epp_deployment(topo, pool, epp, epp_labels, epp_selector),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": epp, "labels": epp_labels},
                "spec": {
                    "selector": epp_selector,
                    "ports": [
                        {
                            "name": "grpc-ext-proc",
                            "port": EPP_GRPC_PORT,
                            "targetPort": "grpc",
                            "protocol": "TCP",
                            "appProtocol": "kubernetes.io/h2c",
                        },
                        {"name": "http-metrics", "port": EPP_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                    ],
                },
            },
            _epp_policy(topo, epp, epp_labels, epp_selector),
        ]
        for objective in gateway.objectives:
            objects.append(
                {
                    "apiVersion": "llm-d.ai/v1alpha2",
                    "kind": "InferenceObjective",
                    "metadata": {"name": f"{objective.name}-{pool.name}", "labels": dict(common)},
                    "spec": {"priority": objective.priority, "poolRef": {"group": INFERENCE_GROUP, "name": pool.name}},
                }
            )
    parent: Json = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.gateway}
    if gateway.gateway_namespace is not None:
        parent["namespace"] = gateway.gateway_namespace
    rules = [
        {
            "matches": [
                {"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"type": "Exact", "name": MODEL_HEADER, "value": model}]}
            ],
            "backendRefs": [{"group": INFERENCE_GROUP, "kind": "InferencePool", "name": pool}],
            "timeouts": {"request": gateway.request_timeout},
        }
        for model, pool in sorted(pool_of_model.items())
    ]
    if len(rules) > 16:
        raise RenderError(f"the HTTPRoute would need {len(rules)} rules; Gateway API allows 16 per HTTPRoute")
    objects.append(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": f"{stack.name}-inference", "labels": dict(common)},
            "spec": {"parentRefs": [parent], "rules": rules},
        }
    )
    return objects


def _epp_policy(topo: Topology, name: str, labels: Json, selector: Json) -> Json:
    """The gateway (its own namespace) calls the picker's ext-proc port; Prometheus reads its metrics."""
    prometheus = topo.stack.deploy.prometheus
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": EPP_GRPC_PORT}]},
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus.namespace}},
                            "podSelector": {"matchLabels": dict(prometheus.pod_labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": EPP_METRICS_PORT}],
                },
            ],
        },
    }


def _epp_deployment(topo: Topology, pool: PoolTopology, name: str, labels: Json, selector: Json) -> Json:
    stack = topo.stack
    gateway = stack.deploy.gateway
    assert gateway is not None
    container = {
        "name": "epp",
        "image": image_with_registry(gateway.epp_image, stack.deploy.images.registry),
        "imagePullPolicy": stack.deploy.images.pull_policy,
        "args": [
            f"--pool-name={pool.name}",
            f"--pool-namespace={topo.namespace}",
            f"--pool-group={INFERENCE_GROUP}",
            f"--config-file=/config/{EPP_CONFIG_FILE}",
            f"--grpc-health-port={EPP_HEALTH_PORT}",
            "--zap-encoder=json",
        ],
        "ports": [
            {"name": "grpc", "containerPort": EPP_GRPC_PORT, "protocol": "TCP"},
            {"name": "grpc-health", "containerPort": EPP_HEALTH_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": EPP_METRICS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {"grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"}, "periodSeconds": 10},
        "readinessProbe": {"grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"}, "periodSeconds": 2},
        "env": [
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": True}],
    }
    spec: Json = {
        "serviceAccountName": name,
        "terminationGracePeriodSeconds": EPP_TERMINATION_GRACE_S,
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": name}}],
    }
    if stack.deploy.images.pull_secret is not None:
        spec["imagePullSecrets"] = [{"name": stack.deploy.images.pull_secret}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
