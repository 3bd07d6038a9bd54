"""Single-node compose: ``deploy/compose/compose.yaml`` plus Prometheus and Grafana provisioning.

Each pool replica is its own service (``<pool>-<index>``) with its own GPUs, so replicas never
share a device unless the node has too few (then the file says so). Every Triton service carries
its pool's headless-Service DNS name as a network alias: Docker's DNS answers that name with every
replica's address, exactly as the Kubernetes headless Service does, so ``router/routes.yaml`` and
``monitoring/exporter.yaml`` are mounted unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from generator.naming import headless_dns, service_dns
from generator.render.deploy.paths import ArtifactPath
from generator.render.deploy.templates import COMPOSE_TEMPLATES, render_yaml
from generator.render.deploy.topology import (
    CONFIG_MOUNT,
    EXPORTER_CONFIG_FILE,
    EXPORTER_HEALTH_PATH,
    EXPORTER_NAME,
    MODELS_MOUNT,
    ROUTER_CONFIG_FILE,
    ROUTER_NAME,
    ROUTER_READY_PATH,
    PoolTopology,
    Topology,
    exporter_args,
    router_args,
    server_command,
)

__all__ = ["COMPOSE_ROOT", "render_compose", "compose_service_names", "admin_key_variable"]

COMPOSE_ROOT = "deploy/compose"
# Relative to deploy/compose/ in the output directory.
OUTPUT_ROOT = "../.."
DASHBOARDS_DIR = "monitoring/dashboards/"
PROMETHEUS_CONFIG = "monitoring/prometheus.yml"
RULES_DIR = "monitoring/rules/"
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
HEALTH_INTERVAL = "10s"
Json = dict[str, Any]

_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def admin_key_variable(topo: Topology) -> str:
    return f"{topo.stack.deploy.compose_env_prefix}_TRITON_ADMIN_KEY"


def compose_service_names(pool: PoolTopology) -> list[str]:
    return [f"{pool.name}-{index}" for index in range(pool.pool.replicas)]


def _bytes(quantity: str) -> int:
    match = _QUANTITY.match(quantity)
    if match is None:  # fractional quantities: round down to whole bytes
        number, unit = re.match(r"^([0-9.]+)([A-Za-z]*)$", quantity).groups()  # type: ignore[union-attr]
        return int(float(number) * _FACTORS.get(unit or None, 1))
    return int(match.group(1)) * _FACTORS[match.group(2)]


def render_compose(
    topo: Topology, rendered: Mapping[str, bytes], artifacts: list[ArtifactPath], header: str
) -> dict[str, bytes]:
    if any(pool.multi_node for pool in topo.pools):
        names = [pool.name for pool in topo.pools if pool.multi_node]
        text = (
            f"# {header}\n# Not rendered: pools {names} need more GPUs per replica than one node has "
            f"({topo.stack.target.gpus_per_node}); use the Kubernetes LeaderWorkerSet rendering.\n"
        )
        return {f"{COMPOSE_ROOT}/NOT-RENDERED.txt": text.encode()}
    stack = topo.stack
    notes: list[str] = []
    services: Json = {}
    next_gpu = 0
    for pool in topo.pools:
        for service in compose_service_names(pool):
            if pool.node_gpu_ids:
                # Pinned ids keep their node meaning only if the container sees GPUs 0..max in order.
                gpus = list(range(max(pool.node_gpu_ids) + 1))
                if pool.pool.replicas > 1:
                    notes.append(f"{service} uses the pinned GPUs {list(pool.node_gpu_ids)} like every replica of {pool.name}")
            else:
                gpus = [(next_gpu + i) % stack.target.gpus_per_node for i in range(pool.gpus)]
                if pool.gpus and next_gpu + pool.gpus > stack.target.gpus_per_node:
                    notes.append(f"{service} shares GPUs {gpus}: the node has {stack.target.gpus_per_node}")
                next_gpu += pool.gpus
            services[service] = _triton_service(topo, pool, gpus, artifacts)
    triton_services = [name for pool in topo.pools for name in compose_service_names(pool)]
    secrets: Json = {}
    services[ROUTER_NAME] = _router_service(topo, triton_services, artifacts, secrets)
    services[EXPORTER_NAME] = _exporter_service(topo, triton_services)
    dashboards = any(path.startswith(DASHBOARDS_DIR) for path in rendered)
    rules = any(path.startswith(RULES_DIR) for path in rendered)
    services["prometheus"] = _prometheus_service(topo, rules)
    services["grafana"] = _grafana_service(topo, dashboards)
    required_env = [f"{admin_key_variable(topo)}: the header value that unlocks Triton's management APIs"]
    required_env.append(f"{_grafana_password_variable(topo)}: Grafana's admin password")
    if stack.router.api_keys_env is not None:
        required_env.append(f"{stack.router.api_keys_env}: the router's API keys, comma-separated")
    if stack.router.api_keys_file is not None:
        required_env.append("secrets/api-keys (a file next to this one): the router's API keys, one per line")
    files = {
        f"{COMPOSE_ROOT}/compose.yaml": render_yaml(
            COMPOSE_TEMPLATES,
            "compose.yaml.jinja",
            {
                "header": header,
                "project": stack.name,
                "required_env": required_env,
                "notes": notes,
                "services": services,
                "secrets": secrets,
                "volumes": {"prometheus-data": {}, "grafana-data": {}},
            },
        ),
        f"{COMPOSE_ROOT}/grafana/provisioning/datasources/prometheus.yaml": render_yaml(
            COMPOSE_TEMPLATES,
            "grafana-datasources.yaml.jinja",
            {"header": header, "prometheus_url": f"http://prometheus:{PROMETHEUS_PORT}"},
        ),
    }
    if dashboards:
        files[f"{COMPOSE_ROOT}/grafana/provisioning/dashboards/tritonstack.yaml"] = render_yaml(
            COMPOSE_TEMPLATES,
            "grafana-dashboards.yaml.jinja",
            {"header": header, "dashboards_path": "/var/lib/grafana/dashboards"},
        )
    return files


def _artifact_volumes(artifacts: list[ArtifactPath], models: set[str], router: bool = False) -> list[str]:
    # The router reads only tokenizers (usage counts, the input-length check).
    mounts = {
        (p.host_path, p.router_path if router else p.container_path)
        for p in artifacts
        if p.model in models and (not router or p.field == "tokenizer_dir")
    }
    return [f"{host}:{container}:ro" for host, container in sorted(mounts)]


def _triton_service(topo: Topology, pool: PoolTopology, gpus: list[int], artifacts: list[ArtifactPath]) -> Json:
    stack = topo.stack
    ports = stack.deploy.triton_ports
    # Compose interpolates ${VAR:?message}: a missing key stops `docker compose up` with the message.
    key_ref = f"${{{admin_key_variable(topo)}:?set {admin_key_variable(topo)} in .env}}"
    service: Json = {
        "image": topo.triton_image,
        "command": server_command(stack, pool, key_ref, []),
        "restart": "unless-stopped",
        "shm_size": _bytes(stack.deploy.resources.triton_shm),
        "ulimits": {"memlock": -1, "stack": 67108864},
        "volumes": [
            f"{OUTPUT_ROOT}/model_repos/{pool.name}:{MODELS_MOUNT}:ro",
            *_artifact_volumes(artifacts, {m.name for m in pool.models}),
        ],
        "networks": {"default": {"aliases": [headless_dns(pool.name, topo.namespace)]}},
        "healthcheck": {
            "test": ["CMD", "curl", "-fsS", f"http://localhost:{ports.http}/v2/health/ready"],
            "interval": HEALTH_INTERVAL,
            "timeout": "5s",
            "retries": 3,
            # Engines load before the server is ready; failures during this window do not count.
            "start_period": f"{stack.deploy.startup_timeout_s}s",
        },
    }
    if pool.environment:
        service["environment"] = dict(pool.environment)
    if gpus:
        service["deploy"] = {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "device_ids": [str(g) for g in gpus], "capabilities": ["gpu"]}]
                }
            }
        }
    return service


def _python_health(port: int, path: str) -> list[str]:
    # The tritonstack image has Python but not necessarily curl.
    code = f"import urllib.request; urllib.request.urlopen('http://localhost:{port}{path}', timeout=5)"
    return ["CMD", "python", "-c", code]


def _depends_on(triton_services: list[str]) -> Json:
    return {name: {"condition": "service_healthy"} for name in triton_services}


def _router_service(topo: Topology, triton_services: list[str], artifacts: list[ArtifactPath], secrets: Json) -> Json:
    stack = topo.stack
    port = stack.router.port
    service: Json = {
        "image": topo.tritonstack_image,
        "entrypoint": ["tritonstack"],
        "command": router_args(stack),
        "restart": "unless-stopped",
        "ports": [f"{port}:{port}"],
        "volumes": [
            f"{OUTPUT_ROOT}/router/routes.yaml:{CONFIG_MOUNT}/{ROUTER_CONFIG_FILE}:ro",
            *_artifact_volumes(artifacts, {m.name for m in stack.models}, router=True),
        ],
        "networks": {"default": {"aliases": [service_dns(ROUTER_NAME, topo.namespace)]}},
        "depends_on": _depends_on(triton_services),
        "healthcheck": {"test": _python_health(port, ROUTER_READY_PATH), "interval": HEALTH_INTERVAL, "timeout": "5s", "retries": 3},
    }
    if stack.router.api_keys_env is not None:
        variable = stack.router.api_keys_env
        service["environment"] = {variable: f"${{{variable}:?set {variable} in .env}}"}
    if stack.router.api_keys_file is not None:
        secrets["api-keys"] = {"file": "./secrets/api-keys"}
        service["secrets"] = [{"source": "api-keys", "target": stack.router.api_keys_file}]
    return service


def _exporter_service(topo: Topology, triton_services: list[str]) -> Json:
    stack = topo.stack
    port = stack.exporter.port
    return {
        "image": topo.tritonstack_image,
        "entrypoint": ["tritonstack"],
        "command": exporter_args(stack),
        "restart": "unless-stopped",
        "volumes": [f"{OUTPUT_ROOT}/monitoring/exporter.yaml:{CONFIG_MOUNT}/{EXPORTER_CONFIG_FILE}:ro"],
        "networks": {"default": {"aliases": [service_dns(EXPORTER_NAME, topo.namespace)]}},
        "depends_on": {name: {"condition": "service_started"} for name in triton_services},
        "healthcheck": {"test": _python_health(port, EXPORTER_HEALTH_PATH), "interval": HEALTH_INTERVAL, "timeout": "5s", "retries": 3},
    }


def _prometheus_service(topo: Topology, rules: bool) -> Json:
    # The monitoring stage's prometheus.yml addresses the router and exporter by their Kubernetes
    # Service names and the pools by headless DNS; the aliases here make those names resolve.
    volumes = [f"{OUTPUT_ROOT}/{PROMETHEUS_CONFIG}:/etc/prometheus/prometheus.yml:ro", "prometheus-data:/prometheus"]
    if rules:
        volumes.insert(1, f"{OUTPUT_ROOT}/{RULES_DIR.rstrip('/')}:/etc/prometheus/rules:ro")
    return {
        "image": topo.prometheus_image,
        "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
        "restart": "unless-stopped",
        "ports": [f"{PROMETHEUS_PORT}:{PROMETHEUS_PORT}"],
        "volumes": volumes,
        "healthcheck": {
            "test": ["CMD", "wget", "-q", "-O", "-", f"http://localhost:{PROMETHEUS_PORT}/-/ready"],
            "interval": HEALTH_INTERVAL,
            "timeout": "5s",
            "retries": 3,
        },
    }


def _grafana_password_variable(topo: Topology) -> str:
    return f"{topo.stack.deploy.compose_env_prefix}_GRAFANA_ADMIN_PASSWORD"


def _grafana_service(topo: Topology, dashboards: bool) -> Json:
    variable = _grafana_password_variable(topo)
    volumes = ["./grafana/provisioning:/etc/grafana/provisioning:ro", "grafana-data:/var/lib/grafana"]
    if dashboards:
        volumes.append(f"{OUTPUT_ROOT}/{DASHBOARDS_DIR.rstrip('/')}:/var/lib/grafana/dashboards:ro")
    return {
        "image": topo.grafana_image,
        "restart": "unless-stopped",
        "ports": [f"{GRAFANA_PORT}:{GRAFANA_PORT}"],
        "environment": {"GF_SECURITY_ADMIN_PASSWORD": f"${{{variable}:?set {variable} in .env}}"},
        "volumes": volumes,
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
    }
