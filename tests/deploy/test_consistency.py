"""Names, labels, selectors and ports line up between Services, workloads, NetworkPolicies,
ServiceMonitors, the router's routes.yaml and the exporter's config; the router and exporter
command lines parse with their real argument parsers."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from generator.commands import exporter as exporter_command
from generator.commands import router as router_command
from generator.errors import RenderError
from generator.exporter.config import parse_config
from generator.render.deploy import render_deploy
from generator.render.monitoring import render_monitoring
from generator.render.routes import render_routes
from generator.router.config import parse_routes
from tests.support.deploy import OPTIONS, SPECS, deploy_files, render_all, stack_of


def _objects(files: dict[str, bytes]) -> list[dict]:
    return [
        doc
        for path, content in files.items()
        if path.startswith("deploy/k8s/base/") and not path.endswith("kustomization.yaml")
        for doc in yaml.safe_load_all(content)
        if doc
    ]


WORKLOADS = ("Deployment", "StatefulSet", "LeaderWorkerSet", "DisaggregatedSet")


def _pod_templates(obj: dict) -> list[dict]:
    if obj["kind"] == "LeaderWorkerSet":
        return [obj["spec"]["leaderWorkerTemplate"][t] for t in ("leaderTemplate", "workerTemplate")]
    if obj["kind"] == "DisaggregatedSet":
        return [r["spec"]["leaderWorkerTemplate"]["workerTemplate"] for r in obj["spec"]["roles"]]
    return [obj["spec"]["template"]]


def _owned(obj: dict) -> list[tuple[str, list[dict]]]:
    """(name of the pool/component, its pod templates): a DisaggregatedSet holds one pool per role."""
    if obj["kind"] == "DisaggregatedSet":
        return [(r["name"], [r["spec"]["leaderWorkerTemplate"]["workerTemplate"]]) for r in obj["spec"]["roles"]]
    return [(obj["metadata"]["name"], _pod_templates(obj))]


def _pool_pod(objects: list[dict], pool: str) -> dict:
    """The pod spec of a single-node pool, wherever its workload is rendered."""
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            for name, templates in _owned(obj):
                if name == pool:
                    return templates[0]["spec"]
    raise AssertionError(f"no workload for pool {pool}")


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_services_select_serving_pods_with_their_ports(name: str) -> None:
    objects = _objects(deploy_files(stack_of(name)))
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for service in (o for o in objects if o["kind"] == "Service"):
        selected = [
            (w, t) for w in workloads for t in _pod_templates(w) if _matches(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pods"
        for workload, template in selected:
            names = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in names, (service["metadata"]["name"], workload["metadata"]["name"])
        if service["metadata"]["name"].endswith("-headless"):
            # Only rank 0 of a replica serves: a LeaderWorkerSet's workers are not endpoints.
            assert all("ports" in t["spec"]["containers"][0] for _, t in selected)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_workload_selectors_pdbs_policies_and_monitors_line_up(name: str) -> None:
    objects = _objects(deploy_files(stack_of(name)))
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    workloads = [o for k in WORKLOADS for o in by_kind.get(k, [])]
    for workload in workloads:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            selector = workload["spec"]["selector"]["matchLabels"]
            assert _matches(selector, workload["spec"]["template"]["metadata"]["labels"])
            if workload["kind"] == "StatefulSet":
                assert workload["spec"]["serviceName"] == f"{workload['metadata']['name']}-headless"
        for owner, templates in _owned(workload):
            labels = [t["metadata"]["labels"] for t in templates]
            for kind in ("PodDisruptionBudget", "NetworkPolicy"):
                owners = [o for o in by_kind[kind] if o["metadata"]["name"] == owner]
                if kind == "PodDisruptionBudget" and (owner == "exporter" or owner.endswith("-epp")):
                    # One replica (exporter, endpoint picker): a budget would block every node drain.
                    assert not owners
                    continue
                assert len(owners) == 1, (kind, owner)
                selector = owners[0]["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
                assert all(_matches(selector, lab) for lab in labels), (kind, owner)
    services = by_kind["Service"]
    for monitor in by_kind["ServiceMonitor"]:
        selected = [s for s in services if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(selected) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


@pytest.mark.parametrize("name", sorted(SPECS))
def test_network_policies_admit_router_exporter_and_prometheus_only(name: str) -> None:
    stack = stack_of(name)
    objects = _objects(deploy_files(stack))
    pod_labels = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] in ("router", "exporter")
    }
    ports = stack.deploy.triton_ports
    for pool in stack.pools:
        policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == pool.name)
        rules = policy["spec"]["ingress"]
        first = rules[0]
        for component in ("router", "exporter"):
            assert any(_matches(peer["podSelector"]["matchLabels"], pod_labels[component]) for peer in first["from"])
        assert {p["port"] for p in first["ports"]} == {ports.http, ports.grpc, ports.metrics}
        prometheus = rules[1]
        assert prometheus["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": stack.deploy.prometheus.namespace
        }
        assert [p["port"] for p in prometheus["ports"]] == [ports.metrics]
        partner = stack.partner_of(pool)
        peers = sorted(
            peer["podSelector"]["matchLabels"]["tritonstack.io/pool"]
            for r in rules[2:]
            for peer in r.get("from", [])
            if peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "tritonserver"
        )
        expected = ([partner.name] if partner is not None else []) + ([pool.name] if name == "multi-node" else [])
        assert peers == sorted(expected)  # KV transfer between partners, MPI/NCCL inside a multi-node replica
        if stack.deploy.gateway is not None and pool.role != "prefill":
            # the gateway reaches the OpenAI sidecar; the pool's endpoint picker reads Triton's metrics
            assert {"ports": [{"protocol": "TCP", "port": stack.router.port}]} in rules
            picker = next(r for r in rules if r.get("from", [{}])[0].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "endpoint-picker")
            assert picker["ports"] == [{"protocol": "TCP", "port": ports.metrics}]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_router_and_exporter_configs_point_at_the_headless_services(name: str) -> None:
    stack = stack_of(name)
    files = render_all(stack)
    objects = _objects(files)
    headless = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"}
    ns = stack.deploy.namespace
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    mounted = {
        component: deployments[component]["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        for component in ("router", "exporter")
    }
    routes = parse_routes(config_maps[mounted["router"]]["data"]["routes.yaml"])
    exporter = parse_config(config_maps[mounted["exporter"]]["data"]["exporter.yaml"])
    assert config_maps[mounted["router"]]["data"]["routes.yaml"].encode() == files["router/routes.yaml"]
    for pool in stack.pools:
        service = headless[f"{pool.name}-headless"]
        port = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        dns = routes.pools[pool.name].dns
        assert dns is not None and dns.name == f"{pool.name}-headless.{ns}.svc.cluster.local"
        assert (dns.http, dns.grpc, dns.metrics) == (port["http"], port["grpc"], port["metrics"])
        target = exporter.pools[pool.name].dns
        assert target is not None and (target.name, target.metrics) == (dns.name, port["metrics"])
    router_service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "router")
    assert router_service["spec"]["ports"][0]["port"] == stack.router.port


def _parse(configure, args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    configure(parser)
    return parser.parse_args(args)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_router_and_exporter_command_lines_parse_with_the_real_commands(name: str) -> None:
    objects = _objects(deploy_files(stack_of(name)))
    stack = stack_of(name)
    for component, configure, port in (
        ("router", router_command.configure, stack.router.port),
        ("exporter", exporter_command.configure, stack.exporter.port),
    ):
        deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == component)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["tritonstack"] and container["args"][0] == component
        parsed = _parse(configure, container["args"][1:])
        assert str(parsed.config) == f"/etc/tritonstack/{component}.yaml".replace("router.yaml", "routes.yaml")
        assert parsed.port == port
        assert "0.0.0.0" in (getattr(parsed, "host", None), getattr(parsed, "bind", None))
        assert container["ports"][0]["containerPort"] == port


def test_pool_command_loads_every_model_of_the_pool_with_restricted_apis() -> None:
    stack = stack_of("disagg")
    objects = _objects(deploy_files(stack))
    decode = _pool_pod(objects, "decode")  # a DisaggregatedSet role in this spec
    command = decode["containers"][0]["command"]
    # The LLM-API model starts its TP2 ranks itself (tensorrt_llm.LLM): one tritonserver, one model.
    assert command[0] == "tritonserver"
    loads = [a.removeprefix("--load-model=") for a in command if a.startswith("--load-model=")]
    assert loads == ["llama-70b_llmapi"]
    restricted = [a for a in command if a.startswith("--http-restricted-api=")]
    assert restricted == [
        "--http-restricted-api=model-repository,model-config,shared-memory,logging,trace,statistics:triton-admin-key=$(TRITON_ADMIN_KEY)"
    ]
    assert "--model-control-mode=explicit" in command and "--disable-auto-complete-config" in command
    resources = decode["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 2
    cpu_pool = next(o for o in objects if o["metadata"]["name"] == "cpu-chat" and o["kind"] == "StatefulSet")
    assert "nvidia.com/gpu" not in cpu_pool["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_deploy_without_the_routes_stage_stops_the_render() -> None:
    stack = stack_of("two-pool")
    with pytest.raises(RenderError, match="router/routes.yaml"):
        render_deploy(stack, {"monitoring/exporter.yaml": b""}, OPTIONS)


def test_readme_lists_secrets_and_paths_pods_cannot_see() -> None:
    stack = stack_of("two-pool")
    outside = stack.model_copy(
        update={"models": [m.model_copy(update={"tokenizer_dir": "/models/hf/x"}) for m in stack.models]}
    )
    siblings = {**render_routes(outside, OPTIONS), **render_monitoring(outside)}
    readme = render_deploy(outside, siblings, OPTIONS)["deploy/README.md"].decode()
    assert "`tritonstack-triton-admin` with key `value`" in readme
    assert "`tritonstack-api-keys` with key `api-keys`" in readme
    assert "models[llama-8b].tokenizer_dir '/models/hf/x'" in readme
    clean = deploy_files(stack)["deploy/README.md"].decode()
    assert "Will not work" not in clean


def test_compose_aliases_make_the_kubernetes_names_resolve() -> None:
    stack = stack_of("two-pool")
    compose = yaml.safe_load(deploy_files(stack)["deploy/compose/compose.yaml"])
    services = compose["services"]
    assert sorted(n for n in services if n.startswith("chat-")) == [
        "chat-large-0", "chat-large-1", "chat-small-0", "chat-small-1", "chat-small-2",
    ]  # fmt: skip
    routes = parse_routes(render_routes(stack, OPTIONS)["router/routes.yaml"].decode())
    for pool in stack.pools:
        for index in range(pool.replicas):
            aliases = services[f"{pool.name}-{index}"]["networks"]["default"]["aliases"]
            assert routes.pools[pool.name].dns.name in aliases
    # 3 × 1 GPU + 2 × 2 GPUs on an 8-GPU node: no replica shares a GPU.
    devices = [
        tuple(services[n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]) for n in sorted(services) if n.startswith("chat-")
    ]
    flat = [d for group in devices for d in group]
    assert len(flat) == len(set(flat)) == 7
    prometheus = yaml.safe_load(render_monitoring(stack)["monitoring/prometheus.yml"])
    static = [t for job in prometheus["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    for target in static:
        host = target.rsplit(":", 1)[0]
        assert any(host in s.get("networks", {}).get("default", {}).get("aliases", []) for s in services.values()), host
    assert services["router"]["environment"] == {"ROUTER_API_KEYS": "${ROUTER_API_KEYS:?set ROUTER_API_KEYS in .env}"}


def test_spec_errors_name_the_deploy_field() -> None:
    from generator.errors import SpecError
    from generator.spec import parse_spec

    text = SPECS["multi-node"].replace("storage: {kind: host_path}", "storage: {kind: sync}")
    with pytest.raises(SpecError, match=r"big.yaml:\d+: deploy.storage: .*sync"):
        parse_spec(text, "big.yaml")
    text = SPECS["multi-node"].replace("storage: {kind: host_path}", "resources: {triton: {cpu: lots, memory: 1Gi}}")
    with pytest.raises(SpecError, match=r"deploy.resources.triton.cpu: .*not a Kubernetes quantity"):
        parse_spec(text, "big.yaml")


def test_topology_is_frozen() -> None:
    from generator.render.deploy.topology import topology

    topo = topology(stack_of("two-pool"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.pools[0].gpus = 3  # type: ignore[misc]
