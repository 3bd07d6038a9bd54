"""Every rendered manifest validates offline: Kubernetes objects against the schemas kubernetes-validate
ships for a pinned Kubernetes version, our CRD schemas (deploy/schemas/) for ServiceMonitor,
LeaderWorkerSet and Argo CD Application, the compose file against the compose-spec schema that
check-jsonschema vendors, and each kustomize overlay through a real ``kubectl kustomize``."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from generator.render.deploy_k8s import K8S_ROOT
from generator.render.deploy_render import DEPLOY_ROOT
from tests.deploy_fixtures import SPECS, deploy_files, render_all, stack_of

K8S_VERSION = "1.32.0"  # the version kubectl here speaks; kubernetes-validate ships its schemas
KUBECTL_TIMEOUT_S = 60
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset-leaderworkerset-v1.json",
    ("argoproj.io/v1alpha1", "Application"): "application-argoproj-v1alpha1.json",
}


def _crd_validator(filename: str) -> jsonschema.protocols.Validator:
    schemas = DEPLOY_ROOT / "schemas"
    metadata = json.loads((schemas / "_metadata.json").read_text())
    registry = Registry().with_resource("tritonstack:metadata", Resource.from_contents(metadata))
    schema = json.loads((schemas / filename).read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=jsonschema.FormatChecker())


def _documents(files: dict[str, bytes]) -> list[tuple[str, dict]]:
    docs = []
    for path, content in files.items():
        if path.startswith(f"{K8S_ROOT}/") and path.endswith(".yaml") and "/overlays/" not in path:
            if path.endswith("kustomization.yaml"):
                continue
            docs += [(path, doc) for doc in yaml.safe_load_all(content) if doc]
    return docs


def _validate_object(path: str, obj: dict) -> list[str]:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        errors = [f"{path}: {obj['kind']}/{obj['metadata']['name']}: {e.message}" for e in _crd_validator(CRD_SCHEMAS[key]).iter_errors(obj)]
        if obj["kind"] == "LeaderWorkerSet":
            # The pod templates inside are plain PodSpecs: check them with the Kubernetes schema.
            template = obj["spec"]["leaderWorkerTemplate"]
            for role in ("leaderTemplate", "workerTemplate"):
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{role.lower()}"}, "spec": template[role]["spec"]}
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


def _compose_validator() -> jsonschema.protocols.Validator:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(ref.read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


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
    kubectl = shutil.which("kubectl")
    # `make test` installs it (Makefile: system-deps); an overlay that kustomize cannot build must fail here.
    assert kubectl is not None, "kubectl is not installed: run `make system-deps` (Debian package kubernetes-client)"
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
        if doc["kind"] not in ("Deployment", "StatefulSet", "LeaderWorkerSet"):
            continue
        pods = (
            [doc["spec"]["template"]["spec"]]
            if doc["kind"] != "LeaderWorkerSet"
            else [doc["spec"]["leaderWorkerTemplate"][t]["spec"] for t in ("leaderTemplate", "workerTemplate")]
        )
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
