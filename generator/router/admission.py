"""Admission control: a slot on a replica, or a bounded wait for one, or a clear refusal.

Each replica takes at most ``max_inflight_per_replica`` requests; the slot is held until the
response stream ends (the caller releases it in ``finally``). When every available replica is
full, up to ``max_queue`` requests wait (each at most ``queue_timeout_s``); beyond that the router
answers 429, and a wait that times out answers 503 — both with ``Retry-After`` — instead of letting
overload collapse the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from generator.router.policies import Hints, ReplicaPolicy
from generator.router.replicas import PoolState, Replica
from generator.spec.router import RouterSettings

__all__ = ["Admission", "Refused"]


class Refused(Exception):
    """No slot: ``status`` is 429 (queue full), 503 (no replica, or waited too long)."""

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Admission:
    def __init__(self, settings: RouterSettings) -> None:
        self.cap = settings.max_inflight_per_replica
        self.max_queue = settings.max_queue
        self.queue_timeout = settings.queue_timeout_s
        self.retry_after = settings.retry_after_s

    async def acquire(
        self, pool: PoolState, policy: ReplicaPolicy, hints: Hints, exclude: Collection[Replica] = ()
    ) -> Replica:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.queue_timeout
        while True:
            usable = [r for r in pool.replicas if r.available and r not in exclude]
            if not usable:
                raise Refused(503, f"no ready replica in pool {pool.name!r}", self.retry_after)
            open_slots = [r for r in usable if r.inflight < self.cap]
            if open_slots:
                replica = policy.choose(open_slots, hints)
                replica.inflight += 1
                return replica
            if len(pool.waiters) >= self.max_queue:
                raise Refused(429, f"pool {pool.name!r} is at capacity; retry later", self.retry_after)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Refused(503, f"pool {pool.name!r} stayed at capacity; retry later", self.retry_after)
            waiter: asyncio.Future[None] = loop.create_future()
            pool.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise Refused(
                    503, f"pool {pool.name!r} stayed at capacity; retry later", self.retry_after
                ) from None
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    pool.wake_one()  # we were handed a slot but are leaving: pass it on
                raise
            finally:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)

    @staticmethod
    def release(pool: PoolState, replica: Replica) -> None:
        replica.inflight -= 1
        pool.wake_one()
