"""Kubernetes pod specs of the stack's parts, computed in Python for the manifest templates.

The templates lay out objects; the lists inside a pod (containers, volumes, mounts, probes) are built
here because they depend on storage kind, GPU count and MPI layout, and because the overlays patch
them by index: :func:`artifacts_mounts` says where the GPU-kind sub-path goes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from generator.render.deploy.topology import (
    CONFIG_MOUNT,
    MODELS_MOUNT,
    PoolTopology,
    Topology,
    image_with_registry,
    server_command,
)
from generator.spec import Stack

__all__ = [
    "ADMIN_KEY_ENV",
    "GPU_RESOURCE",
    "PodParts",
    "triton_pod",
    "lws_pods",
    "tool_pod",
    "API_KEYS_KEY",
    "ApiKeysRef",
]

GPU_RESOURCE = "nvidia.com/gpu"
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
GPU_KIND_ENV = "GPU_KIND"
API_KEYS_KEY = "api-keys"
PROBE_PERIOD_S = 10
# A tritonserver pod's grace after SIGTERM: in-flight generations finish after its endpoint is removed.
TRITON_TERMINATION_GRACE_S = 120

Json = dict[str, Any]


@dataclass(frozen=True)
class PodParts:
    """A pod spec plus where an overlay patches it."""

    spec: Json
    # (container list key, container index, volumeMount index) of every artifacts mount, for subPath.
    artifacts_mounts: tuple[tuple[str, int, int], ...]
    # index of the sync init container (storage kind "sync"), whose GPU_KIND env an overlay sets.
    sync_container: int | None
    uses_gpus: bool


def _resources(stack: Stack, component: str, gpus: int) -> Json:
    spec = getattr(stack.deploy.resources, component)
    requests: Json = {"cpu": spec.cpu, "memory": spec.memory}
    limits: Json = {"memory": spec.memory_limit or spec.memory}
    if spec.cpu_limit is not None:
        limits["cpu"] = spec.cpu_limit
    if gpus:
        # Extended resources are requested through limits (requests default to them).
        limits[GPU_RESOURCE] = gpus
        requests[GPU_RESOURCE] = gpus
    return {"requests": requests, "limits": limits}


def _storage_volumes(stack: Stack, with_models: bool) -> list[Json]:
    storage = stack.deploy.storage
    volumes: list[Json] = []
    if storage.kind == "pvc":
        if with_models:
            volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": storage.models_claim, "readOnly": True}})
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": storage.artifacts_claim, "readOnly": True}})
    elif storage.kind == "host_path":
        if with_models:
            volumes.append({"name": "models", "hostPath": {"path": storage.models_host_path, "type": "Directory"}})
        volumes.append({"name": "artifacts", "hostPath": {"path": storage.artifacts_host_path, "type": "Directory"}})
    else:
        if with_models:
            volumes.append({"name": "models", "emptyDir": {}})
        volumes.append({"name": "artifacts", "emptyDir": {}})
    return volumes


def _storage_mounts(stack: Stack, pool: str | None) -> list[Json]:
    storage = stack.deploy.storage
    mounts: list[Json] = []
    if pool is not None:
        models: Json = {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}
        if storage.kind != "sync":
            # One claim holds model_repos/ as rendered; each pool sees its own repository.
            models["subPath"] = f"model_repos/{pool}"
        mounts.append(models)
    mounts.append({"name": "artifacts", "mountPath": storage.artifacts_mount_path, "readOnly": True})
    return mounts


def _sync_container(stack: Stack, pool: str | None) -> Json:
    """Copies the pool's repository and the GPU kind's artifacts from object storage before start."""
    storage = stack.deploy.storage
    assert storage.sync is not None
    source = storage.sync.source.rstrip("/")
    lines = ["set -eu"]
    if pool is not None:
        lines.append(f'aws s3 sync --only-show-errors "{source}/model_repos/{pool}/" {MODELS_MOUNT}/')
    lines.append(
        f'aws s3 sync --only-show-errors "{source}/artifacts/${{{GPU_KIND_ENV}:+${GPU_KIND_ENV}/}}" '
        f"{storage.artifacts_mount_path}/"
    )
    container: Json = {
        "name": "sync",
        "image": image_with_registry(storage.sync.image, stack.deploy.images.registry),
        "imagePullPolicy": stack.deploy.images.pull_policy,
        "command": ["sh", "-c", "\n".join(lines)],
        "env": [{"name": GPU_KIND_ENV, "value": ""}],
        # Sync mode has no sub-paths: the emptyDir volumes are this pod's own.
        "volumeMounts": [{**mount, "readOnly": False} for mount in _storage_mounts(stack, pool)],
    }
    if storage.sync.credentials_secret is not None:
        container["envFrom"] = [{"secretRef": {"name": storage.sync.credentials_secret}}]
    return container


def _http_probe(path: str, port: str, failures: int) -> Json:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _triton_ports(stack: Stack) -> list[Json]:
    ports = stack.deploy.triton_ports
    return [
        {"name": "http", "containerPort": ports.http, "protocol": "TCP"},
        {"name": "grpc", "containerPort": ports.grpc, "protocol": "TCP"},
        {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
    ]


def _pod_common(stack: Stack, uses_gpus: bool, volumes: list[Json]) -> Json:
    spec: Json = {}
    if stack.deploy.images.pull_secret is not None:
        spec["imagePullSecrets"] = [{"name": stack.deploy.images.pull_secret}]
    if uses_gpus:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    spec["volumes"] = volumes
    return spec


def _triton_container(
    stack: Stack, topo: Topology, pool: PoolTopology, command: list[str], with_probes: bool
) -> Json:
    container: Json = {
        "name": "tritonserver",
        "image": topo.triton_image,
        "imagePullPolicy": stack.deploy.images.pull_policy,
        "command": command,
        "env": [
            {
                "name": ADMIN_KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": stack.deploy.restricted_api_secret, "key": "value"}},
            }
        ],
        "ports": _triton_ports(stack),
    }
    container["env"] += [{"name": name, "value": value} for name, value in pool.environment]
    if with_probes:
        container["startupProbe"] = _http_probe(
            "/v2/health/ready", "http", math.ceil(stack.deploy.startup_timeout_s / PROBE_PERIOD_S)
        )
        container["readinessProbe"] = _http_probe("/v2/health/ready", "http", 3)
        container["livenessProbe"] = _http_probe("/v2/health/live", "http", 6)
    container["resources"] = _resources(stack, "triton", pool.gpus_per_pod)
    container["volumeMounts"] = [*_storage_mounts(stack, pool.name), {"name": "dshm", "mountPath": "/dev/shm"}]
    return container


def _shm_volume(stack: Stack) -> Json:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": stack.deploy.resources.triton_shm}}


def triton_pod(topo: Topology, pool: PoolTopology) -> PodParts:
    """The pod of a single-node replica: one tritonserver (under mpirun for TP×PP > 1)."""
    stack = topo.stack
    command = server_command(stack, pool, f"$({ADMIN_KEY_ENV})", [])
    container = _triton_container(stack, topo, pool, command, with_probes=True)
    return _triton_pod(stack, pool, container, uses_gpus=pool.uses_gpus)


def _triton_pod(stack: Stack, pool: PoolTopology, container: Json, *, uses_gpus: bool) -> PodParts:
    """A pod running one tritonserver container: the model storage (and its sync init container),
    shared memory, and the grace period a draining server needs. ``uses_gpus`` is what the pod
    parts report (a multi-node group's pods all host ranks)."""
    spec = _pod_common(stack, pool.uses_gpus, [*_storage_volumes(stack, True), _shm_volume(stack)])
    sync_index = None
    if stack.deploy.storage.kind == "sync":
        spec["initContainers"] = [_sync_container(stack, pool.name)]
        sync_index = 0
    spec["containers"] = [container]
    spec["terminationGracePeriodSeconds"] = TRITON_TERMINATION_GRACE_S
    return PodParts(spec=spec, artifacts_mounts=_mount_indexes(spec), sync_container=sync_index, uses_gpus=uses_gpus)


def lws_pods(topo: Topology, pool: PoolTopology, lws_name: str) -> tuple[PodParts, PodParts]:
    """Leader and worker pods of a multi-node replica (LeaderWorkerSet).

    The leader writes an MPI hostfile from the group's DNS names (LWS gives every pod
    ``<leader pod>-<index>.<lws name>``) and starts one tritonserver per rank with mpirun; workers
    run sshd and host their ranks. Needs the LWS controller and an image with sshd and a shared SSH
    key, as in the LWS TensorRT-LLM example.
    """
    stack = topo.stack
    mpirun = server_command(stack, pool, f"${{{ADMIN_KEY_ENV}}}", ["--hostfile", "/tmp/hostfile"])
    # "$$" is Kubernetes' escape for "$": only $(TRITON_ADMIN_KEY)-style references are expanded by
    # the kubelet, the shell's own $(...) must reach the shell untouched.
    script = "\n".join(
        [
            "set -eu",
            "{",
            # The orchestrator rank (in-server disaggregation) needs a slot of its own on the leader.
            f'  echo "$$(hostname).{lws_name} slots={pool.gpus_per_pod + int(pool.orchestrator)}"',
            "  for i in $$(seq 1 $$((LWS_GROUP_SIZE - 1))); do",
            f'    echo "$$(hostname)-$$i.{lws_name} slots={pool.gpus_per_pod}"',
            "  done",
            "} > /tmp/hostfile",
            "exec " + _shell_join(mpirun),
        ]
    )
    leader_container = _triton_container(stack, topo, pool, ["bash", "-c", script], with_probes=True)
    worker_container = _triton_container(stack, topo, pool, ["/usr/sbin/sshd", "-De"], with_probes=False)
    del worker_container["ports"]  # workers serve nothing; the leader's rank 0 is the endpoint
    leader = _triton_pod(stack, pool, leader_container, uses_gpus=True)
    worker = _triton_pod(stack, pool, worker_container, uses_gpus=True)
    return leader, worker


@dataclass(frozen=True)
class ApiKeysRef:
    """Where the router finds its API keys: the Secret (key ``api-keys``) exposed as the environment
    variable and/or the file that the router settings name. The keys themselves are never rendered."""

    secret: str
    env: str | None
    file: str | None


def tool_pod(
    topo: Topology,
    component: str,
    args: list[str],
    port: int,
    config_map: str,
    probes: tuple[str, str],
    api_keys: ApiKeysRef | None,
    with_artifacts: bool,
) -> PodParts:
    """Pod of the router or the exporter: the tritonstack image, its config from a ConfigMap;
    ``probes`` are the (readiness, liveness) paths."""
    stack = topo.stack
    # The root filesystem is read-only; /tmp is a small tmpfs (the router's workers keep their
    # shared metrics files there, and Python libraries expect a writable temp dir).
    mounts: list[Json] = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[Json] = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    env: list[Json] = []
    if api_keys is not None:
        key_ref = {"secretKeyRef": {"name": api_keys.secret, "key": API_KEYS_KEY}}
        if api_keys.env is not None:
            env.append({"name": api_keys.env, "valueFrom": key_ref})
        if api_keys.file is not None:
            mounts.append({"name": "api-keys", "mountPath": api_keys.file, "subPath": API_KEYS_KEY, "readOnly": True})
            volumes.append({"name": "api-keys", "secret": {"secretName": api_keys.secret}})
    if with_artifacts:
        # The router tokenizes (usage counts, the input-length check) with the models' tokenizers.
        mounts += _storage_mounts(stack, None)
        volumes += _storage_volumes(stack, False)
    container: Json = {
        "name": component,
        "image": topo.tritonstack_image,
        "imagePullPolicy": stack.deploy.images.pull_policy,
        "command": ["tritonstack"],
        "args": args,
    }
    if env:
        container["env"] = env
    container.update(
        {
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "readinessProbe": _http_probe(probes[0], "http", 3),
            "livenessProbe": _http_probe(probes[1], "http", 6),
            "resources": _resources(stack, component, 0),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": mounts,
        }
    )
    spec = _pod_common(stack, False, volumes)
    spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    sync_index = None
    if with_artifacts and stack.deploy.storage.kind == "sync":
        spec["initContainers"] = [_sync_container(stack, None)]
        sync_index = 0
    spec["containers"] = [container]
    return PodParts(spec=spec, artifacts_mounts=_mount_indexes(spec), sync_container=sync_index, uses_gpus=False)


def _mount_indexes(spec: Json) -> tuple[tuple[str, int, int], ...]:
    found = []
    for index, container in enumerate(spec["containers"]):
        for mount_index, mount in enumerate(container.get("volumeMounts", [])):
            if mount["name"] == "artifacts":
                found.append(("containers", index, mount_index))
    return tuple(found)


def _shell_join(args: list[str]) -> str:
    """Quote for sh: every argument single-quoted, except that ``${VAR}`` references stay expandable
    (the admin key is read from the environment at start, never written into the manifest)."""
    out = []
    for arg in args:
        if "${" in arg:
            escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
            out.append(f'"{escaped}"')
        elif arg and all(ch.isalnum() or ch in "-_=/.,:+@%" for ch in arg):
            out.append(arg)
        else:
            out.append("'" + arg.replace("'", "'\"'\"'") + "'")
    return " ".join(out)
