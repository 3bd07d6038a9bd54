"""A live stack against its render: served configs, conformance requests, metric families.

:func:`verify_stack` takes the stack, the rendered files (``generator.pipeline.build``) and the
addresses of what runs, and returns one :class:`CheckResult` per check and target, in this order:
reachability of each replica, each served model's config against the render, the conformance
requests of every model kind (``conformance``) and through the router (``router_checks``), then the
metric families on Triton's, the exporter's and the router's ``/metrics`` (read after the requests,
so request-driven families exist).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import httpx
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from generator.exporter.catalogue import CATALOGUE
from generator.exporter.triton_metrics import ENGINE_FAMILIES, TRITON_FAMILIES, TritonParseError, samples
from generator.naming import model_triton_models, triton_names
from generator.spec import Pool, Stack, uses_llm_api
from generator.validate import parse_configs
from generator.verify import conformance
from generator.verify.conformance import ConformanceSettings, Replica
from generator.verify.report import CheckResult, failed, passed
from generator.verify.router_checks import RouterTarget, router_checks

__all__ = [
    "ENGINE_FAMILIES",
    "TRITON_FAMILIES",
    "ReplicaAddress",
    "Targets",
    "compare_config",
    "verify_stack",
]

ModelConfig = model_config_pb2.ModelConfig

@dataclass(frozen=True)
class ReplicaAddress:
    pool: str
    index: int
    http_url: str
    grpc_address: str
    metrics_url: str

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.index}"

    def conformance(self) -> Replica:
        return Replica(self.http_url, self.grpc_address)


@dataclass(frozen=True)
class Targets:
    replicas: tuple[ReplicaAddress, ...]
    router_url: str | None = None
    exporter_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    conformance: ConformanceSettings = field(default_factory=ConformanceSettings)


def verify_stack(stack: Stack, files: dict[str, bytes], targets: Targets) -> list[CheckResult]:
    rendered = _rendered_configs(files)
    results: list[CheckResult] = []
    live: list[ReplicaAddress] = []
    for pool in stack.pools:
        given = [r for r in targets.replicas if r.pool == pool.name]
        if not given:
            results.append(failed("address", pool.name, "no --triton address given for this pool"))
        for replica in given:
            reachable = _reachable(replica, targets.timeout_s)
            results.append(reachable)
            if reachable.passed:
                live.append(replica)
    for replica in live:
        pool = stack.pool(replica.pool)
        for model in _pool_models(stack, pool):
            results.append(_config_check(replica, model, rendered.get((pool.name, model)), targets.timeout_s))
    for replica in live:
        results += _conformance(stack, stack.pool(replica.pool), replica, targets.conformance)
    if targets.router_url:
        router = RouterTarget(targets.router_url, targets.api_key, targets.timeout_s)
        streaming = frozenset(m.name for m in stack.models if m.streaming)
        results += router_checks(router, [m.name for m in stack.models], streaming)
    for replica in live:
        results.append(_triton_families(stack, stack.pool(replica.pool), replica, targets.timeout_s))
    wanted = _dashboard_families(files)
    if targets.exporter_url:
        results += _exporter_families(targets.exporter_url, wanted, targets.replicas, targets.timeout_s)
    if targets.router_url:
        router_wanted = {f for f in wanted if f.startswith("tritonstack_router_")}
        results.append(
            _router_families(targets.router_url, router_wanted, targets.api_key, targets.timeout_s)
        )
    return results


def _pool_models(stack: Stack, pool: Pool) -> list[str]:
    return [name for model in pool.models for name in model_triton_models(stack, pool, model)]


def _reachable(replica: ReplicaAddress, timeout_s: float) -> CheckResult:
    url = f"{replica.http_url}/v2/health/ready"
    try:
        response = httpx.get(url, timeout=min(timeout_s, 10.0))
    except httpx.HTTPError as exc:
        return failed("reachable", replica.name, f"cannot reach {url}: {type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return failed("reachable", replica.name, f"{url} answered HTTP {response.status_code}")
    return passed("reachable", replica.name, replica.http_url)


# --- served config vs render ----------------------------------------------------------------------------


def _rendered_configs(files: dict[str, bytes]) -> dict[tuple[str, str], ModelConfig]:
    repos, _problems = parse_configs(
        {p: d for p, d in files.items() if PurePosixPath(p).name == "config.pbtxt"}
    )
    return {
        (repo, model): parsed.config for repo, models in repos.items() for model, parsed in models.items()
    }


def _config_check(
    replica: ReplicaAddress, model: str, expected: ModelConfig | None, timeout_s: float
) -> CheckResult:
    target = f"{replica.name} {model}"
    if expected is None:
        return failed("config", target, "the render has no config for this model")
    url = f"{replica.http_url}/v2/models/{model}/config"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return failed("config", target, f"cannot reach {url}: {type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return failed("config", target, f"not served: HTTP {response.status_code} {response.text[:200]}")
    served = ModelConfig()
    json_format.ParseDict(response.json(), served, ignore_unknown_fields=True)
    problems = compare_config(expected, served)
    if problems:
        return failed("config", target, "; ".join(problems))
    return passed(
        "config",
        target,
        f"{len(expected.input)} inputs, {len(expected.output)} outputs, {len(expected.parameters)} parameters",
    )


def compare_config(expected: ModelConfig, served: ModelConfig) -> list[str]:
    """What a served config lacks or has differently from the rendered one: tensors (name, type,
    dims, optional), max_batch_size, decoupled, and every rendered parameter (served extras are
    not compared)."""
    problems: list[str] = []
    if expected.max_batch_size != served.max_batch_size:
        problems.append(f"max_batch_size {served.max_batch_size}, rendered {expected.max_batch_size}")
    # Triton marks an ensemble decoupled itself when one of its steps is; only other models say so.
    if expected.platform != "ensemble" and (
        expected.model_transaction_policy.decoupled != served.model_transaction_policy.decoupled
    ):
        problems.append(
            f"decoupled {served.model_transaction_policy.decoupled}, rendered {expected.model_transaction_policy.decoupled}"
        )
    for kind, want, have in (
        ("input", expected.input, served.input),
        ("output", expected.output, served.output),
    ):
        problems += _compare_tensors(kind, {t.name: t for t in want}, {t.name: t for t in have})
    for key, value in sorted(expected.parameters.items()):
        if key not in served.parameters:
            problems.append(f"parameter {key} missing (rendered {value.string_value!r})")
        elif served.parameters[key].string_value != value.string_value:
            problems.append(
                f"parameter {key} is {served.parameters[key].string_value!r}, rendered {value.string_value!r}"
            )
    return problems


def _compare_tensors(kind: str, want: dict, have: dict) -> list[str]:
    problems = [f"{kind} {name} missing" for name in want if name not in have]
    problems += [f"{kind} {name} served but not rendered" for name in have if name not in want]
    for name in want.keys() & have.keys():
        w, h = want[name], have[name]
        if w.data_type != h.data_type:
            problems.append(
                f"{kind} {name} type {model_config_pb2.DataType.Name(h.data_type)}, "
                f"rendered {model_config_pb2.DataType.Name(w.data_type)}"
            )
        if list(w.dims) != list(h.dims):
            problems.append(f"{kind} {name} dims {list(h.dims)}, rendered {list(w.dims)}")
        if kind == "input" and w.optional != h.optional:
            problems.append(f"{kind} {name} optional {h.optional}, rendered {w.optional}")
    return sorted(problems)


# --- conformance, per model kind ---------------------------------------------------------------------


def _conformance(
    stack: Stack, pool: Pool, replica: ReplicaAddress, settings: ConformanceSettings
) -> list[CheckResult]:
    address = replica.conformance()
    results: list[CheckResult] = []
    for model in pool.models:
        if uses_llm_api(stack, stack.model(model)):
            continue  # one LLM-API model, not the engine set: NVIDIA's engine clients do not apply
        names = triton_names(model, pool.role, in_server_disaggregation=pool.in_server_disaggregation)
        if pool.role == "prefill":
            results.append(conformance.prefill_context_only(address, names.ensemble, settings))
            continue
        streaming = stack.model(model).streaming
        for entry in (names.ensemble, names.bls):
            if entry:
                results += conformance.entry_checks(address, entry, settings, streaming=streaming)
        if names.context is None:  # the engine itself (in-server disaggregation: a BLS in between)
            results += conformance.engine_checks(
                address, names.preprocessing, names.llm, settings, streaming=streaming
            )
            results.append(
                conformance.pipeline_by_hand(
                    address, (names.preprocessing, names.llm, names.postprocessing), names.ensemble, settings
                )
            )
    return [r.at(replica.name) for r in results]


# --- metric families ------------------------------------------------------------------------------------


def _scrape(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> tuple[str | None, str]:
    try:
        response = httpx.get(url, timeout=timeout_s, headers=headers or {})
    except httpx.HTTPError as exc:
        return None, f"cannot reach {url}: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return None, f"{url} answered HTTP {response.status_code}"
    return response.text, ""


def _families(text: str) -> dict[str, set[str]]:
    """family (sample name without _sum/_count/_bucket/_total suffixes kept as is) → model labels."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            found.setdefault(line.split()[2], set())
    for name, labels, _value in samples(text):
        for family in {name, re.sub(r"_(sum|count|bucket)$", "", name)}:
            found.setdefault(family, set()).add(labels.get("model", ""))
    return found


def _triton_families(stack: Stack, pool: Pool, replica: ReplicaAddress, timeout_s: float) -> CheckResult:
    text, problem = _scrape(replica.metrics_url, timeout_s)
    if text is None:
        return failed("metrics/triton", replica.name, problem)
    try:
        found = _families(text)
    except TritonParseError as exc:
        return failed("metrics/triton", replica.name, str(exc))
    missing = [f for f in TRITON_FAMILIES if f not in found]
    for model in pool.models:
        if uses_llm_api(stack, stack.model(model)):
            continue
        names = triton_names(model, pool.role, in_server_disaggregation=pool.in_server_disaggregation)
        for engine in [n for n in (names.context, names.generation) if n] or [names.llm]:
            missing += [
                f"{f}{{model={engine}}}" for f in ENGINE_FAMILIES if engine not in found.get(f, set())
            ]
    if missing:
        return failed("metrics/triton", replica.name, f"missing: {', '.join(missing)}")
    return passed("metrics/triton", replica.name, f"{len(TRITON_FAMILIES)} Triton and the engine families")


def _dashboard_families(files: dict[str, bytes]) -> set[str]:
    """Every tritonstack_* series the rendered dashboards and alert/recording rules query."""
    names: set[str] = set()
    for path, data in files.items():
        if path.startswith(("monitoring/dashboards/", "monitoring/rules/")):
            names |= set(re.findall(r"(?<![:\w])tritonstack_[a-z0-9_]+", data.decode("utf-8", "replace")))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def _exporter_families(
    url: str, wanted: set[str], replicas: tuple[ReplicaAddress, ...], timeout_s: float
) -> list[CheckResult]:
    text, problem = _scrape(f"{url}/metrics", timeout_s)
    if text is None:
        return [failed("metrics/exporter", url, problem)]
    found = _families(text)
    gpu_up = any(
        labels.get("source") == "nvml" and value == 1.0
        for name, labels, value in samples(text)
        if name == "tritonstack_exporter_source_up"
    )
    catalogue = {spec.name: spec for spec in CATALOGUE}
    # GPU memory families only exist where NVML answers; on a CPU stack they are rightly absent.
    needed = sorted(f for f in wanted if f in catalogue and (gpu_up or "gpu" not in catalogue[f].labels))
    results = []
    missing = [f for f in needed if f not in found]
    if missing:
        results.append(
            failed(
                "metrics/exporter", url, f"families the dashboards query are missing: {', '.join(missing)}"
            )
        )
    else:
        results.append(passed("metrics/exporter", url, f"{len(needed)} families the dashboards query"))
    up = {
        (labels.get("pool"), labels.get("replica")): value
        for name, labels, value in samples(text)
        if name == "tritonstack_target_up"
    }
    down = [r.name for r in replicas if up.get((r.pool, str(r.index))) != 1.0]
    if down:
        results.append(
            failed("metrics/exporter-targets", url, f"tritonstack_target_up is not 1 for {', '.join(down)}")
        )
    else:
        results.append(passed("metrics/exporter-targets", url, f"{len(replicas)} replica(s) up"))
    return results


def _router_families(url: str, wanted: set[str], api_key: str | None, timeout_s: float) -> CheckResult:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text, problem = _scrape(f"{url}/metrics", timeout_s, headers)
    if text is None:
        return failed("metrics/router", url, problem)
    found = _families(text)
    missing = sorted(f for f in wanted if f not in found)
    if missing:
        return failed(
            "metrics/router", url, f"families the dashboards query are missing: {', '.join(missing)}"
        )
    return passed("metrics/router", url, f"{len(wanted)} families the dashboards query")
