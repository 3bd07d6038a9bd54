"""Regenerate the JSON schemas in this folder from the upstream CRDs of the objects tritonstack renders.

    python deploy/schemas/generate.py                      # downloads each CRD at its pinned commit
    python deploy/schemas/generate.py --mirror DIR         # reads DIR/<owner>+<repo>/repo with git

Each CRD's ``openAPIV3Schema`` (the version we render) becomes a draft 2020-12 JSON schema, made
strict the way the API server prunes: objects with listed properties reject unknown fields (unless
the CRD preserves them), ``x-kubernetes-int-or-string`` and ``nullable`` turn into JSON-schema types.
Descriptions and ``status`` are dropped; ``x-kubernetes-validations`` (CEL) and ``default`` stay
for the tests, which apply defaults and evaluate the rules. Pod templates inside LeaderWorkerSet and
DisaggregatedSet are cut to ``type: object``: the tests check them against the Kubernetes PodSpec
schema that kubernetes-validate ships, which is stricter than the CRD's copy. ``_sources.json``
records where every file came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
POD = {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "x-tritonstack": "checked as a PodSpec"}
LWS_TEMPLATE = "/properties/spec/properties/leaderWorkerTemplate/properties"
DS_TEMPLATE = "/properties/spec/properties/roles/items/properties/spec/properties/leaderWorkerTemplate/properties"

# file → (repository, commit, path of the CRD, version, JSON pointers cut to POD)
SOURCES: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "scaledobject-keda-v1alpha1.json": (
        "kedacore/keda", "8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a", "config/crd/bases/keda.sh_scaledobjects.yaml", "v1alpha1", (),
    ),
    "leaderworkerset-leaderworkerset-v1.json": (
        "kubernetes-sigs/lws", "060ab4da17eea1f0865fcbd3236bb1075e2cea32",
        "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml", "v1",
        (f"{LWS_TEMPLATE}/leaderTemplate/properties/spec", f"{LWS_TEMPLATE}/workerTemplate/properties/spec"),
    ),
    "disaggregatedset-disaggregatedset-v1.json": (
        "kubernetes-sigs/lws", "060ab4da17eea1f0865fcbd3236bb1075e2cea32",
        "config/crd/bases/disaggregatedset.x-k8s.io_disaggregatedsets.yaml", "v1",
        (f"{DS_TEMPLATE}/leaderTemplate/properties/spec", f"{DS_TEMPLATE}/workerTemplate/properties/spec"),
    ),
    "inferencepool-inference-v1.json": (
        "kubernetes-sigs/gateway-api-inference-extension", "84436a96b9e6ce2b59ddacd3d04c31b4fbd442de",
        "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml", "v1", (),
    ),
    "inferenceobjective-llm-d-v1alpha2.json": (
        "llm-d/llm-d-router", "ebab687927f5331c1b39defcb579a07951bce56c", "config/crd/bases/llm-d.ai_inferenceobjectives.yaml",
        "v1alpha2", (),
    ),
    "httproute-gateway-v1.json": (
        "kubernetes-sigs/gateway-api", "4564255ac2c35d582249b3cdf261bdf51c8bca32",
        "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml", "v1", (),
    ),
    "servicemonitor-monitoring-v1.json": (
        "prometheus-operator/prometheus-operator", "6adcebc5076c34f4f55f8f5f7b1e528929373ac7",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml", "v1", (),
    ),
    "prometheusrule-monitoring-v1.json": (
        "prometheus-operator/prometheus-operator", "6adcebc5076c34f4f55f8f5f7b1e528929373ac7",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml", "v1", (),
    ),
    "grafanadashboard-grafana-v1beta1.json": (
        "grafana/grafana-operator", "60d3ebd2b21a7736970cac8964aa71f7a4ac2ecc",
        "config/crd/bases/grafana.integreatly.org_grafanadashboards.yaml", "v1beta1", (),
    ),
    "application-argoproj-v1alpha1.json": (
        "argoproj/argo-cd", "37ee0097cf851bc2dd7665fc081bbce61a7e836e", "manifests/crds/application-crd.yaml", "v1alpha1", (),
    ),
    "kustomization-kustomize-v1.json": (
        "fluxcd/kustomize-controller", "186fb3b29138ce82ff61ba1a9370b96a3dd598fe",
        "config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml", "v1", (),
    ),
}  # fmt: skip


def _fetch(repo: str, commit: str, path: str, mirror: Path | None) -> str:
    if mirror is not None:
        git_dir = mirror / repo.replace("/", "+") / "repo"
        return subprocess.run(
            ["git", "-C", str(git_dir), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
        ).stdout
    url = f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode("utf-8")


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert(value) for key, value in node.items() if key != "description"}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _cut(schema: dict[str, Any], pointer: str) -> None:
    parts = pointer.strip("/").split("/")
    node = schema
    for part in parts[:-1]:
        node = node[part]
    if parts[-1] not in node:
        raise SystemExit(f"pointer {pointer} not found")
    node[parts[-1]] = dict(POD)


def schema_of(crd_text: str, version: str, cuts: tuple[str, ...], source: str) -> dict[str, Any]:
    crd = next(doc for doc in yaml.safe_load_all(crd_text) if doc and doc.get("kind") == "CustomResourceDefinition")
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = served["schema"]["openAPIV3Schema"]
    schema.get("properties", {}).pop("status", None)
    for pointer in cuts:
        _cut(schema, pointer)
    converted = _convert(schema)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    converted["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    converted["properties"]["kind"] = {"const": kind}
    converted["properties"]["metadata"] = {"$ref": "tritonstack:metadata"}
    converted["required"] = sorted({"apiVersion", "kind", "metadata", *converted.get("required", [])})
    converted["additionalProperties"] = False
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"{kind} ({group}/{version}) from {source}", **converted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, help="read CRDs from git mirrors <DIR>/<owner>+<repo>/repo")
    args = parser.parse_args(argv)
    index = {}
    for filename, (repo, commit, path, version, cuts) in SOURCES.items():
        source = f"https://github.com/{repo}/blob/{commit}/{path}"
        try:
            text = _fetch(repo, commit, path, args.mirror)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{filename}: cannot read {source}: {exc}", file=sys.stderr)
            return 1
        schema = schema_of(text, version, cuts, source)
        (HERE / filename).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        index[filename] = {"apiVersion": schema["properties"]["apiVersion"]["const"], "kind": schema["properties"]["kind"]["const"], "source": source}
    (HERE / "_sources.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
