"""Kubernetes objects an operator runs the stack with: KEDA autoscaling, monitoring objects, Flux.

* one KEDA ``ScaledObject`` per pool (per prefill/decode role) on the exporter's series: waiting
  requests, KV-cache usage and tokens/s, with bounds and per-replica targets from
  ``deploy.autoscaling`` (the router keeps its CPU HPA);
* a ``PrometheusRule`` carrying the rule files ``render_monitoring`` writes, which are the files the
  promtool tests in ``monitoring/tests/`` load (one source, parsed here, never copied by hand);
* the Grafana dashboards as a ConfigMap (for the Grafana sidecar) and/or a ``GrafanaDashboard``
  that reads that same ConfigMap;
* a Flux ``Kustomization`` per GPU kind beside the Argo CD Application.

Everything is returned as data (dicts) for ``k8s`` to lay out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from generator.errors import RenderError
from generator.render.deploy.templates import K8S_TEMPLATES, render_yaml
from generator.render.deploy.topology import Topology
from generator.render.monitoring import RULE_FILES
from generator.spec.deploy import GpuKind, PoolScaling

__all__ = [
    "ScaleTarget",
    "dashboard_objects",
    "flux_kustomization",
    "prometheus_rule",
    "scaled_objects",
    "scaling_of",
    "trigger_queries",
]

Json = dict[str, Any]
KEDA_API = "keda.sh/v1alpha1"
# The exporter's token counters move when a request finishes; 2m spans several requests at any
# useful load while still following a ramp within a couple of KEDA polls.
RATE_WINDOW = "2m"
DASHBOARD_LABEL = "grafana_dashboard"  # what the Grafana sidecar of kube-prometheus-stack watches
FOLDER_ANNOTATION = "grafana_folder"


@dataclass(frozen=True)
class ScaleTarget:
    """What a pool's ScaledObject scales: a workload with a scale subresource."""

    api_version: str
    kind: str
    name: str


def scaling_of(topo: Topology, pool: str) -> PoolScaling:
    autoscaling = topo.stack.deploy.autoscaling
    assert autoscaling is not None
    unknown = sorted(set(autoscaling.pools) - {p.name for p in topo.pools})
    if unknown:
        raise RenderError(f"deploy.autoscaling.pools names unknown pools {unknown}; pools are {[p.name for p in topo.pools]}")
    return autoscaling.pools.get(pool, autoscaling.defaults)


def _selector(topo: Topology, pool: str, **extra: str) -> str:
    # The Prometheus Operator labels every series scraped through a ServiceMonitor with the target's
    # namespace; the exporter labels its own series by pool.
    labels = {"namespace": topo.namespace, "pool": pool, **extra}
    return "{" + ", ".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def trigger_queries(topo: Topology, pool: str) -> dict[str, str]:
    """PromQL per trigger name: what each ScaledObject trigger of ``pool`` asks Prometheus."""
    role = topo.stack.pool(pool).role
    tokens = "prompt_tokens_total" if role == "prefill" else "generated_tokens_total"
    sel = _selector(topo, pool)
    return {
        # Engines that do not publish the waiting gauge (LLM-API models) still have Triton's queue.
        "waiting-requests": (
            f"(sum(tritonstack_engine_waiting_requests{sel}) or vector(0))"
            f" + sum(tritonstack_triton_pending_requests{_selector(topo, pool, step='engine')})"
        ),
        "kv-cache-usage": f"avg(tritonstack_kv_cache_usage_ratio{sel})",
        "tokens-per-second": f"sum(rate(tritonstack_{tokens}{sel}[{RATE_WINDOW}]))",
        # The router answers requests for a pool with no replica (503) and counts them per pool; a
        # disaggregated model's requests carry pool="<prefill>+<decode>" (generator/router/app.py).
        "wake-from-zero": (
            f'sum(rate(tritonstack_router_requests_total{{namespace="{topo.namespace}", '
            f'pool=~"{pool}|{pool}[+].+|.+[+]{pool}"}}[{RATE_WINDOW}]))'
        ),
    }


def _number(value: float) -> str:
    """KEDA reads thresholds as strings of numbers; never an exponent (YAML 1.2 would read 1e+09 as a float)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def scaled_objects(topo: Topology, targets: Mapping[str, ScaleTarget]) -> list[Json]:
    """One ScaledObject per pool in ``targets`` (pool name → the object it scales)."""
    autoscaling = topo.stack.deploy.autoscaling
    assert autoscaling is not None
    objects = []
    for pool in topo.pools:
        if pool.name not in targets:
            continue
        scaling = scaling_of(topo, pool.name)
        minimum = pool.pool.replicas if scaling.min_replicas is None else scaling.min_replicas
        maximum = scaling.max_replicas if scaling.max_replicas is not None else max(1, 2 * minimum)
        if maximum < max(minimum, 1):
            raise RenderError(f"pool {pool.name}: autoscaling max_replicas ({maximum}) is below min_replicas ({minimum})")
        queries = trigger_queries(topo, pool.name)
        triggers = []
        for name, threshold, metric_type in (
            ("waiting-requests", scaling.waiting_requests, "AverageValue"),
            ("kv-cache-usage", scaling.kv_cache_usage, "Value"),
            ("tokens-per-second", scaling.tokens_per_second, "AverageValue"),
        ):
            if threshold is not None:
                triggers.append(_trigger(autoscaling.prometheus_url, name, queries[name], threshold, metric_type))
        if minimum == 0:
            # Only wakes the pool (activationThreshold); the threshold is out of reach so that the
            # triggers above alone size it once it runs.
            wake = _trigger(autoscaling.prometheus_url, "wake-from-zero", queries["wake-from-zero"], 1e9, "AverageValue")
            wake["metadata"]["activationThreshold"] = _number(scaling.activation_requests_per_second)
            triggers.append(wake)
        target = targets[pool.name]
        spec: Json = {
            "scaleTargetRef": {"apiVersion": target.api_version, "kind": target.kind, "name": target.name},
            "pollingInterval": autoscaling.polling_interval_s,
            "cooldownPeriod": autoscaling.cooldown_period_s,
            "minReplicaCount": minimum,
            "maxReplicaCount": maximum,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_s,
                            # one replica at a time: each holds requests that must drain
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                }
            },
            "triggers": triggers,
        }
        objects.append(
            {
                "apiVersion": KEDA_API,
                "kind": "ScaledObject",
                "metadata": {
                    "name": pool.name,
                    "labels": {**topo.common_labels(), **topo.selector_labels("tritonserver", pool.name)},
                },
                "spec": spec,
            }
        )
    return objects


def _trigger(server: str, name: str, query: str, threshold: float, metric_type: str) -> Json:
    return {
        "type": "prometheus",
        "name": name,
        "metricType": metric_type,
        "metadata": {"serverAddress": server, "query": query, "threshold": _number(threshold)},
    }


# --- monitoring objects ---------------------------------------------------------------------------


def prometheus_rule(topo: Topology, rendered: Mapping[str, bytes]) -> Json:
    """The rule files of ``render_monitoring`` (``monitoring/rules/``), their groups in file order."""
    groups: list[Json] = []
    for name in RULE_FILES:
        path = f"monitoring/rules/{name}"
        if path not in rendered:
            raise RenderError(f"deploy needs {path} from the monitoring render stage for the PrometheusRule")
        try:
            groups += yaml.safe_load(rendered[path])["groups"]
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise RenderError(f"{path} is not a Prometheus rule file ({exc})") from None
    monitoring = topo.stack.deploy.monitoring
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": f"{topo.stack.name}-rules", "labels": {**topo.common_labels(), **monitoring.rule_labels}},
        "spec": {"groups": groups},
    }


def dashboard_objects(topo: Topology, rendered: Mapping[str, bytes]) -> list[Json]:
    """The dashboards ``render_monitoring`` built, in one ConfigMap; a GrafanaDashboard per board
    reads its key from that ConfigMap (no second copy of the JSON)."""
    monitoring = topo.stack.deploy.monitoring
    boards = {
        PurePosixPath(path).name: content.decode("utf-8")
        for path, content in sorted(rendered.items())
        if path.startswith("monitoring/dashboards/") and path.endswith(".json")
    }
    if not boards or not monitoring.dashboards:
        return []
    config_map_name = f"{topo.stack.name}-dashboards"
    labels = dict(topo.common_labels())
    if "configmap" in monitoring.dashboards:
        labels[DASHBOARD_LABEL] = "1"
    objects: list[Json] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": config_map_name,
                "labels": labels,
                "annotations": {FOLDER_ANNOTATION: monitoring.dashboard_folder},
            },
            "data": boards,
        }
    ]
    if "grafana-operator" in monitoring.dashboards:
        for key in boards:
            objects.append(
                {
                    "apiVersion": "grafana.integreatly.org/v1beta1",
                    "kind": "GrafanaDashboard",
                    "metadata": {"name": PurePosixPath(key).stem, "labels": dict(topo.common_labels())},
                    "spec": {
                        "instanceSelector": {"matchLabels": dict(monitoring.grafana_instance_labels)},
                        "folder": monitoring.dashboard_folder,
                        "configMapRef": {"name": config_map_name, "key": key},
                    },
                }
            )
    return objects


# --- GitOps ----------------------------------------------------------------------------------------


def flux_kustomization(topo: Topology, kind: GpuKind, overlay_path: str, header: str) -> bytes:
    gitops = topo.stack.deploy.gitops
    return render_yaml(
        K8S_TEMPLATES,
        "flux-kustomization.yaml.jinja",
        {
            "header": header,
            "gpu": kind.name,
            "name": f"{topo.stack.name}-{kind.name}",
            "flux_namespace": gitops.flux_namespace,
            "labels": topo.common_labels(),
            "interval": gitops.flux_interval,
            "path": f"./{overlay_path}",
            "source": gitops.flux_source,
            "repo_url": gitops.repo_url,
            "revision": gitops.revision,
            # engines load for up to startup_timeout_s before the pods turn ready
            "timeout": f"{topo.stack.deploy.startup_timeout_s + 300}s",
        },
    )
