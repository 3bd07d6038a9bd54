"""Replicas of a pool and what the router knows about each: readiness, ejection, load.

A :class:`Replica` is plain state; :class:`PoolState` holds one pool's replicas and the waiters
queued for a free slot. :class:`ReplicaMonitor` keeps them current in the background: it resolves
DNS names (a Kubernetes headless Service lists every ready pod), polls readiness (which also
re-admits ejected replicas), and scrapes Triton's ``/metrics`` for load the router did not send
(other router processes or instances), following the signals llm-d's scheduler reads from Triton:
``nv_trt_llm_request_metrics{request_type="active"|"waiting"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from generator.router.config import Endpoint, PoolRoute
from generator.router.upstream import Upstream
from generator.spec.router import RouterSettings

__all__ = ["PoolState", "Replica", "ReplicaMonitor", "external_load", "resolve_pool"]

log = logging.getLogger("tritonstack.router")


@dataclass(eq=False)
class Replica:
    pool: str
    endpoint: Endpoint
    ready: bool = False
    ejected: bool = False
    inflight: int = 0
    # Requests Triton reports beyond the ones this router process has in flight.
    external: int = 0
    consecutive_failures: int = 0
    ejected_until: float = 0.0  # the clock's time before which an ejected replica stays out
    ejection_streak: int = 0  # ejections without a successful request in between

    @property
    def key(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.grpc}"

    @property
    def load(self) -> int:
        return self.inflight + self.external

    @property
    def available(self) -> bool:
        return self.ready and not self.ejected


@dataclass(eq=False)
class PoolState:
    name: str
    role: str
    replicas: list[Replica] = field(default_factory=list)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            self.wake_one()

    @property
    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.available)


_LOAD_LINE = re.compile(
    r'^nv_trt_llm_request_metrics\{[^}]*request_type="(active|waiting)"[^}]*\}\s+([0-9.eE+-]+)'
)


def external_load(metrics_text: str, own_inflight: int) -> int:
    """Triton's active+waiting requests (all models of the replica) minus ours, never negative."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = _LOAD_LINE.match(line)
        if match:
            total += float(match.group(2))
    return max(0, int(total) - own_inflight)


async def resolve_pool(route: PoolRoute) -> list[Endpoint]:
    """Static endpoints as written; a DNS name becomes one endpoint per address it resolves to."""
    if route.dns is None:
        return list(route.endpoints)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(route.dns.name, route.dns.grpc, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    hosts = sorted({info[4][0] for info in infos})
    return [
        Endpoint(host=h, http=route.dns.http, grpc=route.dns.grpc, metrics=route.dns.metrics) for h in hosts
    ]


class ReplicaMonitor:
    """Background tasks keeping each pool's replicas resolved, ready-checked and load-corrected."""

    def __init__(
        self,
        pools: dict[str, PoolState],
        routes: dict[str, PoolRoute],
        upstream: Upstream,
        settings: RouterSettings,
        clock: Callable[[], float],
    ) -> None:
        self.pools = pools
        self.routes = routes
        self.upstream = upstream
        self.settings = settings
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.refresh_membership()
        await self.check_health()
        self._tasks = [
            asyncio.create_task(self._every(self.settings.dns_refresh_s, self.refresh_membership)),
            asyncio.create_task(self._every(self.settings.health_interval_s, self.check_health)),
            asyncio.create_task(self._every(self.settings.load_scrape_interval_s, self.scrape_load)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _every(self, interval: float, step) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except Exception:  # a monitor step must never die; the next round tries again
                log.exception("replica monitor step failed")

    async def refresh_membership(self) -> None:
        """Add new endpoints, drop vanished ones; a kept replica keeps its counters and state."""
        for name, route in self.routes.items():
            pool = self.pools[name]
            endpoints = await resolve_pool(route)
            if route.dns is not None and not endpoints and pool.replicas:
                continue  # a failed lookup is not a scale-to-zero; keep what we had
            by_key = {r.key: r for r in pool.replicas}
            fresh = []
            for endpoint in endpoints:
                key = f"{endpoint.host}:{endpoint.grpc}"
                fresh.append(by_key.get(key) or Replica(pool=name, endpoint=endpoint))
            pool.replicas = fresh

    async def check_health(self) -> None:
        replicas = [r for pool in self.pools.values() for r in pool.replicas]
        results = await asyncio.gather(
            *(self.upstream.ready(r.endpoint, self.settings.connect_timeout_s) for r in replicas)
        )
        for replica, ready in zip(replicas, results):
            was_available = replica.available
            replica.ready = ready
            if ready and replica.ejected and self.clock() >= replica.ejected_until:
                log.info("re-admitting %s replica %s", replica.pool, replica.key)
                replica.ejected = False
                replica.consecutive_failures = 0
            if replica.available and not was_available:
                self.pools[replica.pool].wake_all()

    async def scrape_load(self) -> None:
        replicas = [r for pool in self.pools.values() for r in pool.replicas if r.ready]
        texts = await asyncio.gather(
            *(self.upstream.metrics_text(r.endpoint, self.settings.connect_timeout_s) for r in replicas)
        )
        for replica, text in zip(replicas, texts):
            replica.external = external_load(text, replica.inflight) if text else 0
