"""The operations objects line up with what they act on: KEDA ScaledObjects with the workloads they
scale, the PrometheusRule with the rule files promtool tests, dashboards with Grafana's sidecar and
operator, the gateway path with the pods it routes to, Flux with Argo CD."""

from __future__ import annotations

import argparse

import pytest
import yaml

from generator.commands import router as router_command
from generator.render.deploy.gateway import ENGINE_LABEL, ENGINE_TYPE, SIDECAR
from generator.resources import MONITORING_ROOT
from generator.router.config import parse_routes
from tests.support.deploy import deploy_files, stack_of


def _objects(name: str) -> list[dict]:
    return [
        doc
        for path, content in deploy_files(stack_of(name)).items()
        if path.startswith("deploy/k8s/base/") and not path.endswith("kustomization.yaml")
        for doc in yaml.safe_load_all(content)
        if doc
    ]


def _by(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize(
    ("name", "targets"),
    [
        ("two-pool", {"chat-small": ("apps/v1", "Deployment", "chat-small"), "chat-large": ("apps/v1", "Deployment", "chat-large")}),
        ("multi-node", {"giant": ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "giant")}),
        (
            "disagg",
            {
                "prefill": ("disaggregatedset.x-k8s.io/v1", "DisaggregatedSetRoleScaler", "prefill-decode-prefill"),
                "decode": ("disaggregatedset.x-k8s.io/v1", "DisaggregatedSetRoleScaler", "prefill-decode-decode"),
                "cpu-chat": ("apps/v1", "StatefulSet", "cpu-chat"),
            },
        ),
    ],
)
def test_every_pool_has_a_scaled_object_on_its_workload(name: str, targets: dict) -> None:
    objects = _objects(name)
    scaled = _by(objects, "ScaledObject")
    assert set(scaled) == set(targets)
    workloads = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}
    for pool, target in targets.items():
        ref = scaled[pool]["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == target
        if target[1] == "DisaggregatedSetRoleScaler":
            # LWS names the scaler <set>-<role> for each role whose scaling mode is External.
            ds = _by(objects, "DisaggregatedSet")["prefill-decode"]
            role = next(r for r in ds["spec"]["roles"] if r["name"] == pool)
            assert role["scaling"] == {"mode": "External"} and target[2] == f"prefill-decode-{pool}"
        else:
            assert target in workloads
        for trigger in scaled[pool]["spec"]["triggers"]:
            assert f'pool="{pool}"' in trigger["metadata"]["query"] or f'pool=~"{pool}|' in trigger["metadata"]["query"]
            assert f'namespace="{stack_of(name).deploy.namespace}"' in trigger["metadata"]["query"]
    assert "HorizontalPodAutoscaler" in {o["kind"] for o in _objects("two-pool")}  # the router's own stays


def test_scale_targets_and_scale_to_zero_follow_the_spec() -> None:
    scaled = _by(_objects("two-pool"), "ScaledObject")
    small, large = scaled["chat-small"]["spec"], scaled["chat-large"]["spec"]
    assert (small["minReplicaCount"], small["maxReplicaCount"]) == (3, 6)  # pool replicas, twice that
    assert {t["name"]: t["metadata"]["threshold"] for t in small["triggers"]} == {
        "waiting-requests": "4", "kv-cache-usage": "0.85", "tokens-per-second": "2500",
    }  # fmt: skip
    assert "generated_tokens_total" in small["triggers"][2]["metadata"]["query"]
    assert (large["minReplicaCount"], large["maxReplicaCount"]) == (0, 4)
    wake = next(t for t in large["triggers"] if t["name"] == "wake-from-zero")
    assert wake["metadata"]["activationThreshold"] == "0.1"
    assert "tritonstack_router_requests_total" in wake["metadata"]["query"]
    prefill = _by(_objects("disagg"), "ScaledObject")["prefill"]["spec"]
    tokens = next(t for t in prefill["triggers"] if t["name"] == "tokens-per-second")
    assert "prompt_tokens_total" in tokens["metadata"]["query"]  # a prefill pool's throughput is prompt tokens
    assert "kv-cache-usage" not in {t["name"] for t in prefill["triggers"]}


def _promtool_rule_files() -> list[str]:
    files = []
    for test in sorted((MONITORING_ROOT / "tests").glob("*_test.yml")):
        files += [(test.parent / f).resolve().name for f in yaml.safe_load(test.read_text())["rule_files"]]
    return files


def test_prometheus_rule_carries_exactly_the_rules_promtool_tests() -> None:
    rule = next(iter(_by(_objects("two-pool"), "PrometheusRule").values()))
    tested = sorted(set(_promtool_rule_files()))
    assert tested == ["alerts.yml", "recording.yml"]
    groups = [g for name in ("recording.yml", "alerts.yml") for g in yaml.safe_load((MONITORING_ROOT / "rules" / name).read_text())["groups"]]
    assert rule["spec"]["groups"] == groups
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_dashboards_for_the_sidecar_and_the_grafana_operator() -> None:
    objects = _objects("two-pool")
    config_map = _by(objects, "ConfigMap")["two-pool-dashboards"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboards = _by(objects, "GrafanaDashboard")
    assert dashboards
    for board in dashboards.values():
        ref = board["spec"]["configMapRef"]
        assert ref["name"] == "two-pool-dashboards" and ref["key"] in config_map["data"]
    operator_only = _by(_objects("multi-node"), "ConfigMap")["big-dashboards"]
    assert "grafana_dashboard" not in operator_only["metadata"]["labels"]  # only the operator reads it


def test_gateway_routes_each_model_to_a_pool_whose_pods_serve_openai() -> None:
    stack = stack_of("disagg")
    objects = _objects("disagg")
    pools = _by(objects, "InferencePool")
    assert set(pools) == {"decode", "cpu-chat"}  # prefill is reached by the decode sidecar
    ds = _by(objects, "DisaggregatedSet")["prefill-decode"]
    templates = {r["name"]: r["spec"]["leaderWorkerTemplate"]["workerTemplate"] for r in ds["spec"]["roles"]}
    templates["cpu-chat"] = _by(objects, "StatefulSet")["cpu-chat"]["spec"]["template"]
    config_maps = _by(objects, "ConfigMap")
    for name, pool in pools.items():
        template = templates[name]
        assert all(template["metadata"]["labels"].get(k) == v for k, v in pool["spec"]["selector"]["matchLabels"].items())
        assert template["metadata"]["labels"][ENGINE_LABEL] == ENGINE_TYPE
        sidecar = next(c for c in template["spec"]["containers"] if c["name"] == SIDECAR)
        assert pool["spec"]["targetPorts"] == [{"number": sidecar["ports"][0]["containerPort"]}]
        parser = argparse.ArgumentParser(exit_on_error=False)
        router_command.configure(parser)
        parsed = parser.parse_args(sidecar["args"][1:])
        assert parsed.port == stack.router.port and parsed.host == "0.0.0.0"
        mounted = next(v for v in template["spec"]["volumes"] if v["name"] == "config")["configMap"]["name"]
        routes = parse_routes(config_maps[mounted]["data"]["routes.yaml"])
        own = routes.pools[name]
        assert own.dns is None and [(e.host, e.http) for e in own.endpoints] == [("127.0.0.1", stack.deploy.triton_ports.http)]
        if name == "decode":
            assert routes.pools["prefill"].dns is not None  # the partner through its headless Service
        picker = yaml.safe_load(config_maps[f"{name}-epp"]["data"]["epp-config.yaml"])
        source = next(p for p in picker["plugins"] if p["type"] == "metrics-data-source")
        assert source["parameters"]["port"] == stack.deploy.triton_ports.metrics
        assert pool["spec"]["endpointPickerRef"]["name"] in _by(objects, "Service")
    route = next(iter(_by(objects, "HTTPRoute").values()))
    to_pool = {r["matches"][0]["headers"][0]["value"]: r["backendRefs"][0]["name"] for r in route["spec"]["rules"]}
    assert to_pool == {"llama-70b": "decode", "tiny-chat": "cpu-chat"}
    objectives = _by(objects, "InferenceObjective")
    assert set(objectives) == {"realtime-decode", "realtime-cpu-chat"}


def test_flux_kustomization_applies_the_overlay_argo_cd_syncs() -> None:
    files = deploy_files(stack_of("two-pool"))
    for gpu in ("b200", "h100"):
        flux = yaml.safe_load(files[f"deploy/k8s/flux/{gpu}.yaml"])
        argo = yaml.safe_load(files[f"deploy/k8s/argocd/{gpu}.yaml"])
        assert flux["spec"]["path"] == f"./{argo['spec']['source']['path']}"
        assert flux["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "tritonstack"}
    assert not [p for p in deploy_files(stack_of("disagg")) if "/flux/" in p]  # no repo_url, no GitOps objects
