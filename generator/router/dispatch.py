"""One generate call on one pool: pick a replica, stream its responses, and clean up.

Retries happen before the first upstream response (nothing has reached the client yet) for
transport failures and for a replica that answers nothing in time. After it, a stream that its
replica drops (connection lost, or silent for ``token_timeout_s``) can move to another replica
when the caller says how to continue it (``resume``: on the engine path, the prompt plus the
tokens already streamed, for the tokens still owed; Dynamo calls this request migration). Both
count against ``max_retries``. Replicas not tried yet come first; once every available one was
tried, a retry takes a fresh connection to one of them, never to one that let a first response
time out; a replica failing ``eject_after_failures`` times in a row is ejected
for at least ``ejection_s`` (doubling for repeated ejections) and until the readiness poll sees it
ready again. Only transport failures and timeouts count: a request Triton rejects is the client's
400 (never retried: it would fail everywhere, and a few such requests must not eject a pool). As in
Envoy's outlier detection (``max_ejection_percent``, which "will eject at least one host regardless
of the value": envoy/api/envoy/config/cluster/v3/outlier_detection.proto), at most
``max_ejection_percent`` of a pool's replicas are out at once, but always one may be: past that,
the failing replica keeps its traffic. Every wait is bounded: first response within ``first_token_timeout_s``, each next one
within ``token_timeout_s``. Leaving the generator for any
reason (end, error, client gone, deadline) closes the upstream stream, which cancels the request in
Triton, and releases the replica slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from generator.router.admission import Admission, Refused
from generator.router.metrics import RouterMetrics
from generator.router.policies import Hints, ReplicaPolicy
from generator.router.protocol import ApiError
from generator.router.replicas import PoolState, Replica
from generator.router.upstream import (
    GenerateCall,
    Response,
    Upstream,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamUnavailable,
)
from generator.spec.router import RouterSettings

__all__ = ["Dispatcher", "PoolTarget", "Resume"]

# How to go on with a call whose replica dropped it midway: the call for the rest, given the
# responses already streamed, or None when it cannot be continued.
Resume = Callable[[GenerateCall, list[Response]], GenerateCall | None]

log = logging.getLogger("tritonstack.router")


class _StallGuard:
    """Cancels the task it guards when an upstream wait has lasted ``limit`` seconds.

    ``asyncio.timeout`` around every wait would start and stop an event-loop timer per token; here
    a wait only stamps the time, and the one timer, when it fires before the deadline that the
    stamps imply, re-arms itself. Only waits for the upstream count: while the caller is busy with
    a response (sending it to a slow client) the guard does not fire."""

    def __init__(self, limit: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._limit = limit
        self._since = self._loop.time()
        self._waiting = False
        self.fired = False
        self._handle = self._loop.call_at(self._since + limit, self._check)

    def waiting(self) -> None:
        self._since = self._loop.time()
        self._waiting = True

    def answered(self) -> None:
        self._waiting = False

    def timed_out(self) -> bool:
        """Whether the CancelledError being handled is this guard's (then it is absorbed)."""
        return self.fired and self._task.uncancel() <= self._cancelling

    def _check(self) -> None:
        due = self._since + self._limit
        now = self._loop.time()
        if self._waiting and now >= due:
            self.fired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(due if self._waiting else now + self._limit, self._check)

    def close(self) -> None:
        self._handle.cancel()


@dataclass(frozen=True)
class PoolTarget:
    pool: PoolState
    policy: ReplicaPolicy


class Dispatcher:
    def __init__(
        self,
        upstream: Upstream,
        admission: Admission,
        settings: RouterSettings,
        metrics: RouterMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.upstream = upstream
        self.admission = admission
        self.settings = settings
        self.metrics = metrics
        self.clock = clock

    def _may_eject(self, pool: PoolState) -> bool:
        out = sum(1 for r in pool.replicas if r.ejected)
        allowed = max(1, len(pool.replicas) * self.settings.max_ejection_percent // 100)
        return out < allowed

    def _failed(self, pool: PoolState, replica: Replica, reason: str) -> None:
        """Count a transport failure (``reason``) against ``replica``; eject it after a streak."""
        replica.consecutive_failures += 1
        streak = replica.consecutive_failures
        # Every failure up to an ejection is logged with its cause; a longer streak (a replica
        # kept in by max_ejection_percent) only when it reaches a power of two: a dead replica
        # under load must not write a line per request.
        if streak <= self.settings.eject_after_failures or streak & (streak - 1) == 0:
            log.warning("%s replica %s failed (%d in a row): %s", replica.pool, replica.key, streak, reason)
        if replica.ejected or replica.consecutive_failures < self.settings.eject_after_failures:
            return
        if not self._may_eject(pool):
            if replica.consecutive_failures > self.settings.eject_after_failures:
                return  # said once per streak
            log.warning(
                "%s replica %s failed %d times in a row but stays in: ejecting it would take more than "
                "max_ejection_percent (%d%%) of the pool out",
                replica.pool,
                replica.key,
                replica.consecutive_failures,
                self.settings.max_ejection_percent,
            )
            return
        # Out for a while even if it still reports ready: a replica that answers its readiness
        # probe but fails requests would otherwise flap in and out every health interval.
        replica.ejected = True
        replica.ejection_streak += 1
        hold = self.settings.ejection_s * min(2 ** (replica.ejection_streak - 1), 8)
        replica.ejected_until = self.clock() + hold
        self.metrics.ejections.labels(replica.pool).inc()
        log.warning(
            "ejecting %s replica %s after %d failures, for at least %.0f s",
            replica.pool,
            replica.key,
            replica.consecutive_failures,
            hold,
        )

    async def stream(
        self,
        target: PoolTarget,
        call: GenerateCall,
        hints: Hints,
        retries: int | None = None,
        resume: Resume | None = None,
    ) -> AsyncIterator[Response]:
        """Responses of ``call`` from the pool's replicas; raises ApiError on failure. With
        ``resume``, a stream its replica drops midway goes on on another replica (see above)."""
        pool, tried = target.pool, []
        attempts = 1 + (self.settings.max_retries if retries is None else retries)
        last_problem = "no attempt made"
        timed_out = False  # the last attempt's failure was a replica that never answered (504)
        silent: list[Replica] = []  # replicas that let a first response time out: never again
        for attempt in range(attempts):
            # Replicas not tried yet come first; once every available one was tried, a fresh
            # connection to one of them (the fault is often the connection: a reset, a stream
            # Triton's HTTP frontend misdirected), but not to one that already kept us waiting.
            exclude = tried if any(r.available and r not in tried for r in pool.replicas) else silent
            try:
                replica = await self.admission.acquire(pool, target.policy, hints, exclude=exclude)
            except Refused as refused:
                if tried and timed_out:
                    raise ApiError(504, f"pool {pool.name!r}: {last_problem}", "server_error") from None
                if tried:  # every replica we could reach failed: report the failure, not capacity
                    raise ApiError(
                        503,
                        f"upstream unavailable: {last_problem}",
                        "server_error",
                        retry_after=self.settings.retry_after_s,
                    ) from None
                kind = "rate_limit_error" if refused.status == 429 else "server_error"
                raise ApiError(
                    refused.status, refused.message, kind, retry_after=refused.retry_after
                ) from None
            attempt_call = call if attempt == 0 else replace(call, request_id=f"{call.request_id}-r{attempt}")
            responses = self.upstream.generate(replica.endpoint, attempt_call)
            try:
                try:
                    async with asyncio.timeout(self.settings.first_token_timeout_s):
                        first = await anext(responses, None)
                except UpstreamUnavailable as exc:
                    self._failed(pool, replica, str(exc))
                    tried.append(replica)
                    last_problem, timed_out = str(exc), False
                    if attempt + 1 < attempts:
                        self.metrics.retries.labels(pool.name).inc()
                    continue
                except TimeoutError:
                    # Nothing reached the client yet, so another replica may take the request: a
                    # replica that accepted it and never answered (seen with Triton 2.51's HTTP
                    # frontend under ~1,000 concurrent streams) is a failed attempt, not the end.
                    # Leaving the stream aborts the connection, so Triton cancels the first try.
                    waited = f"no first response within {self.settings.first_token_timeout_s}s"
                    self._failed(pool, replica, waited)
                    tried.append(replica)
                    silent.append(replica)
                    if attempt + 1 < attempts:
                        last_problem, timed_out = waited, True
                        self.metrics.retries.labels(pool.name).inc()
                        continue
                    raise ApiError(504, f"pool {pool.name!r}: {waited}", "server_error") from None
                replica.consecutive_failures = 0
                replica.ejection_streak = 0
                if first is None:
                    return
                streamed = [first]
                yield first
                guard = _StallGuard(self.settings.token_timeout_s)
                try:
                    while True:
                        guard.waiting()
                        try:
                            item = await anext(responses, None)
                        except asyncio.CancelledError:
                            if guard.timed_out():
                                raise TimeoutError from None
                            raise
                        guard.answered()
                        if item is None:
                            return
                        if resume is not None:
                            streamed.append(item)
                        yield item
                finally:
                    guard.close()
            except UpstreamRejected as exc:
                replica.consecutive_failures = 0  # it answered: alive, whatever the request asked
                raise ApiError(400, f"the model rejected the request: {exc}") from None
            except UpstreamFailed as exc:
                raise ApiError(502, f"upstream error: {exc}", "server_error") from None
            except (UpstreamUnavailable, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    problem = f"stopped responding for {self.settings.token_timeout_s}s mid-response"
                    error = ApiError(504, f"pool {pool.name!r} {problem}", "server_error")
                else:
                    problem = f"connection lost mid-response: {exc}"
                    error = ApiError(502, f"upstream {problem}", "server_error")
                self._failed(pool, replica, problem)
                rest = resume(call, streamed) if resume is not None and attempt + 1 < attempts else None
                if rest is None:
                    raise error from None
                log.warning(
                    "moving request %s from %s replica %s to another after %d responses",
                    call.request_id,
                    pool.name,
                    replica.key,
                    len(streamed),
                )
                self.metrics.retries.labels(pool.name).inc()
                tried.append(replica)
                call, last_problem, timed_out = rest, problem, False
                continue
            finally:
                await responses.aclose()
                self.admission.release(pool, replica)
        raise ApiError(
            503,
            f"upstream unavailable: {last_problem}",
            "server_error",
            retry_after=self.settings.retry_after_s,
        )
