"""The exporter's collector: fetches every source when Prometheus scrapes, in parallel, within budget.

Nothing is cached between scrapes and nothing runs between them (Prometheus "Writing exporters":
collect at scrape time, through a custom collector in our own registry). The only state kept
across scrapes is the per-target error counter and last error. A target that is down, slow, too
large or answers garbage gives ``target_up 0`` and one more error, and its reason is logged when it
changes; every other series is still answered.

The scrape budget comes from Prometheus' ``X-Prometheus-Scrape-Timeout-Seconds`` header minus a
headroom (server.py sets it per request through :meth:`TritonstackCollector.budget`), else from the
settings. Each target also has its own deadline, ``target_timeout_s`` from the start of the scrape
(the earlier of the two wins), which ``fetch`` must keep: so a target that drips its answer frees
its worker by then and cannot hold the next scrape's targets back. Sources run on an executor the
caller owns; whatever has not finished by the deadline counts as failed for this scrape.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from generator.errors import TritonstackError
from generator.exporter.catalogue import CATALOGUE, by_name
from generator.exporter.config import ExporterConfig
from generator.exporter.gpu_memory import (
    GpuReading,
    MemInfo,
    Nvml,
    read_meminfo,
    read_memory_pressure_seconds,
)
from generator.exporter.processes import ServerProcesses, read_server_processes
from generator.exporter.triton_metrics import STEP_OF_SUFFIX, PoolValues, parse_triton_metrics

__all__ = ["Target", "Fetch", "Resolve", "TritonstackCollector", "EXPORTER_VERSION"]

EXPORTER_VERSION = "0.1.0"

log = logging.getLogger("tritonstack.exporter")

# (url, timeout seconds) → body text; raises on any failure (HTTP error, non-200, too large), and
# returns or raises within the timeout (generator.exporter.fetch keeps it against any target).
Fetch = Callable[[str, float], str]
# DNS name → addresses of every replica.
Resolve = Callable[[str], list[str]]


@dataclass(frozen=True)
class Target:
    pool: str
    replica: str
    url: str
    pid: int | None
    models: frozenset[str]


@dataclass
class _Outcome:
    """What one source produced on this scrape: a value or an error, and how long it took."""

    value: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class _Families:
    """Samples grouped by catalogue name; turned into metric families at the end of a scrape."""

    samples: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)

    def add(self, name: str, labels: tuple[str, ...], value: float) -> None:
        spec = by_name(name)
        assert len(labels) == len(spec.labels), (name, labels)
        series = self.samples.setdefault(name, {})
        series[labels] = series.get(labels, 0.0) + value

    def families(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for spec in CATALOGUE:
            series = self.samples.get(spec.name)
            if not series:
                continue
            family: GaugeMetricFamily | CounterMetricFamily
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels in sorted(series):
                family.add_metric(list(labels), series[labels])
            yield family


class TritonstackCollector(Collector):
    def __init__(
        self,
        config: ExporterConfig,
        *,
        fetch: Fetch,
        resolve: Resolve,
        executor: Executor,
        nvml: Nvml | None = None,
        read_processes: Callable[[int], ServerProcesses] = read_server_processes,
        meminfo: Callable[[], MemInfo] = read_meminfo,
        memory_pressure: Callable[[], float | None] = read_memory_pressure_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._fetch = fetch
        self._resolve = resolve
        self._executor = executor
        self._nvml = nvml
        self._read_processes = read_processes
        self._meminfo = meminfo
        self._memory_pressure = memory_pressure
        self._clock = clock
        self._budget: contextvars.ContextVar[float | None] = contextvars.ContextVar("scrape_budget", default=None)
        self._errors: dict[tuple[str, str], int] = {}
        self._last_error: dict[tuple[str, str], str | None] = {}
        self._errors_lock = threading.Lock()

    # The registry calls describe() at registration; an empty answer keeps it from scraping Triton then.
    def describe(self) -> list[Any]:
        return []

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Use ``seconds`` as the upstream budget for scrapes made inside this block (this thread)."""
        token = self._budget.set(seconds)
        try:
            yield
        finally:
            self._budget.reset(token)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        started = self._clock()
        budget = self._budget.get()
        deadline = started + (budget if budget is not None else self._config.exporter.upstream_timeout_s)
        out = _Families()

        host_jobs = {"meminfo": self._submit(self._read_host)}
        if self._nvml is not None and self._nvml.available:
            host_jobs["nvml"] = self._submit(self._nvml.read)
        targets = self._targets(deadline, out)
        target_deadline = min(deadline, started + self._config.exporter.target_timeout_s)
        scrapes = {target: self._submit(self._scrape, target, target_deadline) for target in targets}
        pids = [t.pid for t in targets if t.pid is not None]
        if pids:
            host_jobs["processes"] = self._submit(self._read_all_processes, pids)
        outcomes = self._gather({**scrapes, **host_jobs}, deadline)

        processes: dict[int, ServerProcesses] = {}
        for source in sorted(host_jobs):
            outcome = outcomes[source]
            out.add("tritonstack_exporter_source_up", (source,), 0.0 if outcome.error else 1.0)
            out.add("tritonstack_exporter_source_duration_seconds", (source,), outcome.seconds)
        if not outcomes["meminfo"].error:
            meminfo, pressure = outcomes["meminfo"].value
        else:
            meminfo, pressure = None, None
        if pressure is not None:
            out.add("tritonstack_memory_pressure_stalled_seconds_total", (), pressure)
        if "processes" in outcomes and not outcomes["processes"].error:
            processes = outcomes["processes"].value
        gpu = outcomes["nvml"].value if "nvml" in outcomes and not outcomes["nvml"].error else None
        if gpu is not None:
            self._add_gpu_devices(out, gpu, meminfo)

        for target in targets:
            outcome = outcomes[target]
            labels = (target.pool, target.replica)
            self._note_outcome(target, outcome.error)
            if outcome.error:
                with self._errors_lock:
                    self._errors[labels] = self._errors.get(labels, 0) + 1
            else:
                self._add_pool_values(out, target, outcome.value)
            out.add("tritonstack_target_up", labels, 0.0 if outcome.error else 1.0)
            out.add("tritonstack_target_scrape_duration_seconds", labels, outcome.seconds)
            if target.pid is not None and target.pid in processes:
                self._add_processes(out, target, processes[target.pid], gpu)
        with self._errors_lock:
            for labels, count in self._errors.items():
                out.add("tritonstack_target_scrape_errors_total", labels, float(count))

        out.add("tritonstack_exporter_build_info", (EXPORTER_VERSION,), 1.0)
        out.add("tritonstack_exporter_scrape_duration_seconds", (), self._clock() - started)
        yield from out.families()

    # --- sources ----------------------------------------------------------------------------------

    def _submit(self, function: Callable[..., Any], *args: Any) -> Future[_Outcome]:
        return self._executor.submit(self._timed, function, *args)

    def _timed(self, function: Callable[..., Any], *args: Any) -> _Outcome:
        started = self._clock()
        try:
            value = function(*args)
        except TritonstackError as exc:
            return _Outcome(error=str(exc), seconds=self._clock() - started)
        except Exception as exc:  # noqa: BLE001  (one broken source must not break the scrape)
            return _Outcome(error=f"{exc.__class__.__name__}: {exc}", seconds=self._clock() - started)
        return _Outcome(value=value, seconds=self._clock() - started)

    def _gather(self, futures: dict[Any, Future[_Outcome]], deadline: float) -> dict[Any, _Outcome]:
        waited_from = self._clock()
        wait_futures(futures.values(), timeout=max(0.0, deadline - waited_from))
        outcomes = {}
        for key, future in futures.items():
            if future.done():
                outcomes[key] = future.result()
            else:
                # The worker may still finish later; its result is dropped, this scrape counts it failed.
                future.cancel()
                outcomes[key] = _Outcome(error="timed out", seconds=self._clock() - waited_from)
        return outcomes

    def _targets(self, deadline: float, out: _Families) -> list[Target]:
        targets: list[Target] = []
        lookups: dict[str, Future[_Outcome]] = {}
        for pool, spec in sorted(self._config.pools.items()):
            models = frozenset(spec.models)
            for index, replica in enumerate(spec.replicas):
                url = f"http://{_host(replica.host)}:{replica.metrics}/metrics"
                targets.append(Target(pool, str(index), url, replica.pid, models))
            if spec.dns is not None:
                lookups[pool] = self._submit(self._resolve, spec.dns.name)
        if lookups:
            resolved = self._gather(lookups, deadline)
            for pool, outcome in sorted(resolved.items()):
                spec = self._config.pools[pool]
                assert spec.dns is not None
                out.add("tritonstack_exporter_source_up", (f"dns:{pool}",), 0.0 if outcome.error else 1.0)
                for address in sorted(set(outcome.value or [])):
                    url = f"http://{_host(address)}:{spec.dns.metrics}/metrics"
                    targets.append(Target(pool, address, url, None, frozenset(spec.models)))
        return targets

    def _scrape(self, target: Target, deadline: float) -> PoolValues:
        text = self._fetch(target.url, max(0.001, deadline - self._clock()))
        return parse_triton_metrics(text, target.models)

    def _note_outcome(self, target: Target, error: str | None) -> None:
        """Log a target's reason when it changes: once when it fails, again when it recovers."""
        labels = (target.pool, target.replica)
        with self._errors_lock:
            previous = self._last_error.get(labels)
            self._last_error[labels] = error
        if error is not None and error != previous:
            log.warning("target pool=%s replica=%s is down: %s", target.pool, target.replica, error)
        elif error is None and previous is not None:
            log.warning("target pool=%s replica=%s is up again", target.pool, target.replica)

    def _read_all_processes(self, pids: list[int]) -> dict[int, ServerProcesses]:
        found: dict[int, ServerProcesses] = {}
        missing: list[str] = []
        for pid in pids:
            try:
                found[pid] = self._read_processes(pid)
            except TritonstackError as exc:
                missing.append(str(exc))
        if missing and not found:
            raise _AllProcessesGone("; ".join(missing))
        return found

    def _read_host(self) -> tuple[MemInfo, float | None]:
        return self._meminfo(), self._memory_pressure()

    # --- turning values into series ---------------------------------------------------------------

    def _add_pool_values(self, out: _Families, target: Target, values: PoolValues) -> None:
        pool, replica = target.pool, target.replica
        for (model, step), numbers in sorted(values.steps.items()):
            labels = (model, pool, replica, step)
            if "success" in numbers:
                out.add("tritonstack_triton_requests_total", (*labels, "success"), numbers["success"])
            if "failure" in numbers:
                out.add("tritonstack_triton_requests_total", (*labels, "failure"), numbers["failure"])
            for key, name in (
                ("queue_seconds", "tritonstack_triton_queue_seconds_total"),
                ("compute_seconds", "tritonstack_triton_compute_seconds_total"),
                ("request_seconds", "tritonstack_triton_request_seconds_total"),
                ("pending", "tritonstack_triton_pending_requests"),
            ):
                if key in numbers:
                    out.add(name, labels, numbers[key])
        for model, numbers in sorted(values.engine.items()):
            labels = (model, pool, replica)
            for key, name in (
                ("prompt_tokens", "tritonstack_prompt_tokens_total"),
                ("generated_tokens", "tritonstack_generated_tokens_total"),
                ("finished_requests", "tritonstack_engine_finished_requests_total"),
                ("iterations", "tritonstack_engine_iterations_total"),
                ("active", "tritonstack_engine_active_requests"),
                ("waiting", "tritonstack_engine_waiting_requests"),
                ("max_active", "tritonstack_engine_max_active_requests"),
            ):
                if key in numbers:
                    out.add(name, labels, numbers[key])
            if "kv_used" in numbers:
                out.add("tritonstack_kv_cache_blocks", (*labels, "used"), numbers["kv_used"])
            if "kv_free" in numbers:
                out.add("tritonstack_kv_cache_blocks", (*labels, "free"), numbers["kv_free"])
            ratio = numbers.get("kv_fraction")
            if ratio is None and "kv_used" in numbers and "kv_free" in numbers:
                blocks = numbers["kv_used"] + numbers["kv_free"]
                ratio = numbers["kv_used"] / blocks if blocks else None
            if ratio is not None:
                out.add("tritonstack_kv_cache_usage_ratio", labels, ratio)

    def _add_processes(
        self, out: _Families, target: Target, found: ServerProcesses, gpu: GpuReading | None
    ) -> None:
        pool, replica = target.pool, target.replica
        out.add("tritonstack_server_resident_memory_bytes", (pool, replica), float(found.server_rss))
        for triton_model, rss in sorted(found.stub_rss.items()):
            step_labels = _step_labels(triton_model, target)
            if step_labels is not None:
                model, step = step_labels
                out.add("tritonstack_model_resident_memory_bytes", (model, pool, replica, step), float(rss))
        if gpu is None:
            return
        for pid, usages in gpu.process_bytes.items():
            for gpu_index, used in usages:
                if pid == found.server_pid:
                    out.add("tritonstack_server_gpu_memory_bytes", (pool, replica, str(gpu_index)), float(used))
                elif pid in found.stub_pids:
                    step_labels = _step_labels(found.stub_pids[pid], target)
                    if step_labels is not None:
                        model, step = step_labels
                        out.add(
                            "tritonstack_model_gpu_memory_bytes",
                            (model, pool, replica, step, str(gpu_index)),
                            float(used),
                        )

    def _add_gpu_devices(self, out: _Families, gpu: GpuReading, meminfo: MemInfo | None) -> None:
        for device in gpu.devices:
            index = str(device.index)
            if device.used_bytes is not None and device.total_bytes is not None:
                out.add("tritonstack_gpu_memory_reporting_supported", (index,), 1.0)
                out.add("tritonstack_gpu_memory_used_bytes", (index, "nvml"), float(device.used_bytes))
                out.add("tritonstack_gpu_memory_total_bytes", (index, "nvml"), float(device.total_bytes))
                continue
            # Unified memory: the GPU allocates from the host pool; report that pool, flagged.
            out.add("tritonstack_gpu_memory_reporting_supported", (index,), 0.0)
            if meminfo is not None:
                out.add("tritonstack_gpu_memory_used_bytes", (index, "meminfo"), float(meminfo.used_bytes))
                out.add("tritonstack_gpu_memory_total_bytes", (index, "meminfo"), float(meminfo.total_bytes))


class _AllProcessesGone(TritonstackError):
    """No configured tritonserver PID could be read."""


def _step_labels(triton_model: str, target: Target) -> tuple[str, str] | None:
    model, _, suffix = triton_model.partition("_")
    step = STEP_OF_SUFFIX.get(suffix)
    if step is None or model not in target.models:
        return None
    return model, step


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address

