"""The router's own Prometheus metrics, in its own registry (never the global default one).

One process: in-flight per replica is read from the live replica state at scrape time (a
collector), so it can never drift from what admission control sees.

``--workers N``: the kernel hands a scrape to any one worker, so every worker must answer for all
of them. The parent sets ``PROMETHEUS_MULTIPROC_DIR`` before starting the workers; prometheus_client
then keeps counters and histograms in per-process files there, and a scrape sums them. Live
per-replica figures become gauges each worker publishes every second (and at each scrape), summed
over the workers alive ("livesum"); the parent marks a worker's files dead when it exits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from generator.router.replicas import PoolState

__all__ = ["RouterMetrics"]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


@dataclass(frozen=True)
class _Live:
    """A figure read from the live replica state: name, help, labels, how workers combine it."""

    name: str
    help: str
    labels: tuple[str, ...]
    across_workers: str  # prometheus_client multiprocess_mode


_INFLIGHT = _Live(
    "tritonstack_router_replica_inflight_requests",
    "Requests this router has in flight per replica",
    ("pool", "replica"),
    "livesum",
)
_AVAILABLE = _Live(
    "tritonstack_router_replica_available",
    "1 if the replica is ready and not ejected",
    ("pool", "replica"),
    "livemax",
)
_QUEUED = _Live(
    "tritonstack_router_queued_requests", "Requests waiting for a replica slot", ("pool",), "livesum"
)


def _live_values(pools: Iterable[PoolState]) -> Iterator[tuple[_Live, tuple[str, ...], float]]:
    for pool in pools:
        yield _QUEUED, (pool.name,), len(pool.waiters)
        for replica in pool.replicas:
            yield _INFLIGHT, (pool.name, replica.key), replica.inflight
            yield _AVAILABLE, (pool.name, replica.key), 1.0 if replica.available else 0.0


class _ReplicaCollector(Collector):
    """One process: the live figures, read at scrape time."""

    def __init__(self, pools: Callable[[], Iterable[PoolState]]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[Metric]:
        families = {
            live: GaugeMetricFamily(live.name, live.help, labels=list(live.labels))
            for live in (_INFLIGHT, _AVAILABLE, _QUEUED)
        }
        for live, labels, value in _live_values(self._pools()):
            families[live].add_metric(list(labels), value)
        yield from families.values()


class _SharedReplicaGauges:
    """Several workers: the live figures as multiprocess gauges, combined over live workers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauges = {
            live: Gauge(
                live.name, live.help, live.labels, multiprocess_mode=live.across_workers, registry=registry
            )
            for live in (_INFLIGHT, _AVAILABLE, _QUEUED)
        }
        self._published: set[tuple[_Live, tuple[str, ...]]] = set()

    def publish(self, pools: Iterable[PoolState]) -> None:
        current = set()
        for live, labels, value in _live_values(pools):
            current.add((live, labels))
            self._gauges[live].labels(*labels).set(value)
        for live, labels in self._published - current:  # a replica left its pool (DNS, reload)
            self._gauges[live].labels(*labels).set(0)
        self._published = current


class RouterMetrics:
    def __init__(self, pools: Callable[[], Iterable[PoolState]], multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self._pools = pools
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tritonstack_router_requests",
            "Finished requests by model, pool and HTTP status",
            ["model", "pool", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "tritonstack_router_time_to_first_token_seconds",
            "Request arrival to first token sent",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.itl = Histogram(
            "tritonstack_router_inter_token_latency_seconds",
            "Gap between streamed chunks",
            ["model"],
            buckets=_TOKEN_GAP,
            registry=r,
        )
        self.e2e = Histogram(
            "tritonstack_router_request_duration_seconds",
            "Request arrival to last byte",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tritonstack_router_prompt_tokens", "Prompt tokens of served requests", ["model"], registry=r
        )
        self.generated_tokens = Counter(
            "tritonstack_router_generated_tokens",
            "Generated tokens of served requests",
            ["model"],
            registry=r,
        )
        self.retries = Counter(
            "tritonstack_router_retries",
            "Requests re-sent to another replica before the first byte",
            ["pool"],
            registry=r,
        )
        self.ejections = Counter(
            "tritonstack_router_ejections",
            "Replicas ejected after consecutive failures",
            ["pool"],
            registry=r,
        )
        self.phase = Histogram(
            "tritonstack_router_disaggregated_phase_seconds",
            "Disaggregated phases: prefill (context_only call) and decode_first (to first decode response)",
            ["model", "phase"],
            buckets=_LATENCY,
            registry=r,
        )
        self.early_finish = Counter(
            "tritonstack_router_prefill_finished_requests",
            "Disaggregated requests the prefill phase finished (no decode call)",
            ["model"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "tritonstack_router_client_disconnects",
            "Requests abandoned by the client (upstream cancelled)",
            ["model"],
            registry=r,
        )
        self._shared: _SharedReplicaGauges | None = None
        if multiprocess_dir is None:
            self.registry.register(_ReplicaCollector(pools))
        else:
            self._shared = _SharedReplicaGauges(r)

    def publish(self) -> None:
        """Write this worker's live figures for the other workers' scrapes (multiprocess only)."""
        if self._shared is not None:
            self._shared.publish(self._pools())

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.publish()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)
