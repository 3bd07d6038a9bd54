"""The dispatcher without a server: retries before the first byte, request migration after it,
ejection and its bounds, the stall and first-response deadlines, and how Triton's errors are
classified (who caused them decides whether a replica pays). Upstreams are scripted stand-ins;
the same paths on real tritonservers are in test_triton.py, test_migration.py and test_hostile.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from generator.router.admission import Admission
from generator.router.config import Endpoint
from generator.router.dispatch import Dispatcher, PoolTarget
from generator.router.metrics import RouterMetrics
from generator.router.policies import Hints, LeastInflight
from generator.router.protocol import ApiError
from generator.router.replicas import PoolState, Replica, ReplicaMonitor
from generator.router.upstream import (
    GenerateCall,
    Response,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamUnavailable,
    classify_error,
)
from generator.spec.router import RouterSettings
from tests.support.router import replicas

# ------------------------------------------------------------------------------------------ ejection


class ScriptedUpstream:
    """A stand-in for Triton in the ejection timing test: always ready, and every generate call
    fails at the transport level until ``healthy`` is set (the real fault path, a SIGKILLed
    tritonserver, is tested in tests/router/test_triton.py)."""

    def __init__(self) -> None:
        self.healthy = False

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        if not self.healthy:
            raise UpstreamUnavailable("connection refused")
        yield Response(text="ok")

    async def ready(self, endpoint: Endpoint, timeout: float) -> bool:
        return True

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str:
        return ""

    async def close(self) -> None:
        return None


def test_ejected_replica_stays_out_for_the_hold_even_when_ready_and_holds_double(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        now = [100.0]
        settings = RouterSettings(eject_after_failures=1, ejection_s=5.0, max_retries=0)
        upstream = ScriptedUpstream()
        pool = PoolState("a", "aggregated", replicas(1))
        replica = pool.replicas[0]
        metrics = RouterMetrics(lambda: [pool])
        dispatcher = Dispatcher(upstream, Admission(settings), settings, metrics, lambda: now[0])
        monitor = ReplicaMonitor({"a": pool}, {}, upstream, settings, lambda: now[0])
        target = PoolTarget(pool, LeastInflight())

        async def attempt() -> list[str]:
            return [r.text async for r in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints())]

        with caplog.at_level(logging.WARNING, logger="tritonstack.router"), pytest.raises(ApiError):
            await attempt()
        assert replica.ejected and replica.ejected_until == 105.0
        # Each failure is logged with its cause before any ejection: an operator sees why.
        assert f"a replica {replica.key} failed (1 in a row): connection refused" in caplog.text
        now[0] = 104.9
        await monitor.check_health()
        assert replica.ejected  # ready, but the hold has not passed
        now[0] = 105.0
        await monitor.check_health()
        assert not replica.ejected
        with pytest.raises(ApiError):
            await attempt()
        assert replica.ejected and replica.ejected_until == 115.0  # second ejection in a row: 10 s
        now[0] = 115.0
        await monitor.check_health()
        upstream.healthy = True
        assert await attempt() == ["ok"]
        assert replica.ejection_streak == 0  # a success ends the streak: the next hold is 5 s again

    asyncio.run(scenario())


class StallingUpstream(ScriptedUpstream):
    """A stand-in for Triton that sends ``count`` responses, then goes quiet (never ends)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        for i in range(self.count):
            yield Response(text=f"t{i}")
        await asyncio.Event().wait()


def _stall_setup(count: int, token_timeout_s: float) -> tuple[Dispatcher, PoolTarget]:
    settings = RouterSettings(token_timeout_s=token_timeout_s, max_retries=0)
    pool = PoolState("a", "aggregated", replicas(1))
    dispatcher = Dispatcher(
        StallingUpstream(count), Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0.0
    )
    return dispatcher, PoolTarget(pool, LeastInflight())


def test_a_stream_that_goes_quiet_ends_with_504_after_the_token_timeout() -> None:
    async def scenario() -> tuple[list[str], ApiError]:
        dispatcher, target = _stall_setup(2, 0.2)
        got: list[str] = []
        with pytest.raises(ApiError) as failure:
            async with asyncio.timeout(5):  # the "never hangs" bound, far above the 0.2 s deadline
                async for response in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints()):
                    got.append(response.text)
        assert target.pool.replicas[0].inflight == 0  # the slot is released
        return got, failure.value

    got, error = asyncio.run(scenario())
    assert got == ["t0", "t1"] and error.status == 504 and "stopped responding" in error.message


def test_a_slow_client_does_not_count_against_the_token_timeout() -> None:
    async def scenario() -> list[str]:
        dispatcher, target = _stall_setup(3, 0.2)
        got: list[str] = []
        with pytest.raises(ApiError):  # the upstream stalls after three responses
            async for response in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints()):
                got.append(response.text)
                await asyncio.sleep(0.35)  # the consumer is busy longer than the timeout
        return got

    assert asyncio.run(scenario()) == ["t0", "t1", "t2"]


def test_cancelling_the_request_is_not_mistaken_for_a_timeout() -> None:
    async def scenario() -> None:
        dispatcher, target = _stall_setup(1, 30.0)

        async def consume() -> None:
            async for _ in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints()):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()  # what a client disconnect does
        with pytest.raises(asyncio.CancelledError):
            await task
        assert target.pool.replicas[0].inflight == 0

    asyncio.run(scenario())


# ------------------------------------------------------------------- classification, retries, migration


@pytest.mark.parametrize(
    ("message", "status", "kind"),
    [
        (
            "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer",
            500,
            "rejected",
        ),
        ("sampling settings out of range: runtime_top_k=-2147483648 (>= 0)", 400, "rejected"),
        ("[request id: x] unexpected shape for input 'top_k' for model 'm'", 400, "rejected"),
        ("RuntimeError: tensorrt_llm: the engine stopped", 400, "failed"),
        ("internal error", 500, "failed"),
        ("Request for unknown model: 'zz' is not found", 404, "failed"),
        ("Service Unavailable", 503, "unavailable"),
        ("bad gateway", 502, "unavailable"),
        ("gateway timeout: invalid", 504, "unavailable"),
        ("sampling settings out of range: runtime_top_k=-1", None, "rejected"),  # an error event
        ("postprocessing failed", None, "failed"),
    ],
)
def test_triton_errors_are_classified_by_who_caused_them(message: str, status: int | None, kind: str) -> None:
    error = classify_error(message, status)
    expected = {"rejected": UpstreamRejected, "failed": UpstreamFailed, "unavailable": UpstreamUnavailable}
    assert type(error) is expected[kind]
    assert message in str(error)


def test_a_long_failure_streak_is_logged_at_powers_of_two_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> Replica:
        settings = RouterSettings(eject_after_failures=3, max_retries=0, max_ejection_percent=50)
        pool = PoolState("a", "aggregated", replicas(2))
        dispatcher = Dispatcher(
            ScriptedUpstream(), Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0
        )
        for _ in range(70):
            with pytest.raises(ApiError):
                async for _response in dispatcher.stream(
                    PoolTarget(pool, LeastInflight()), GenerateCall("m", {}, "id"), Hints()
                ):
                    pass
        return next(r for r in pool.replicas if not r.ejected)  # kept in: 50 % is out already

    with caplog.at_level(logging.WARNING, logger="tritonstack.router"):
        kept = asyncio.run(scenario())
    assert kept.consecutive_failures > 64
    streaks = [
        int(line.split("failed (")[1].split(" ")[0])
        for line in caplog.text.splitlines()
        if f"replica {kept.key} failed (" in line
    ]
    assert streaks == [1, 2, 3, 4, 8, 16, 32, 64]


class RejectingUpstream(ScriptedUpstream):
    """Triton refusing every request's inputs (a poison request), with a call count."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        self.calls += 1
        raise UpstreamRejected("HTTP 400: sampling settings out of range: runtime_top_k=-1")
        yield Response()  # pragma: no cover (makes this an async generator)


def test_a_rejected_request_is_400_not_retried_and_never_counts_against_the_replica() -> None:
    async def scenario() -> None:
        settings = RouterSettings(eject_after_failures=1, max_retries=2)
        pool = PoolState("a", "aggregated", replicas(3))
        upstream = RejectingUpstream()
        dispatcher = Dispatcher(
            upstream, Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0
        )
        target = PoolTarget(pool, LeastInflight())
        for _ in range(10):
            with pytest.raises(ApiError) as error:
                async for _response in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints()):
                    pass
            assert error.value.status == 400 and error.value.kind == "invalid_request_error"
            assert "out of range" in error.value.message
        assert upstream.calls == 10  # one replica per request: no retries
        assert all(not r.ejected and r.consecutive_failures == 0 and r.inflight == 0 for r in pool.replicas)

    asyncio.run(scenario())


class SilentFirstUpstream(ScriptedUpstream):
    """A replica that accepts the first request and never answers it (what Triton 2.51's HTTP
    frontend did to a few of 2,048 concurrent streams); every later call answers at once."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.cancelled = 0

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        self.calls.append(endpoint.host)
        if len(self.calls) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        yield Response(text="ok")


@pytest.mark.parametrize(("retries", "answer"), [(1, "ok"), (0, 504)])
def test_a_replica_that_never_answers_costs_an_attempt_and_the_request_goes_to_another(
    retries: int, answer: str | int
) -> None:
    async def scenario() -> str | int:
        settings = RouterSettings(first_token_timeout_s=0.05, max_retries=retries, eject_after_failures=3)
        pool = PoolState("a", "aggregated", replicas(2))
        upstream = SilentFirstUpstream()
        dispatcher = Dispatcher(
            upstream, Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0
        )
        target = PoolTarget(pool, LeastInflight())
        try:
            texts = [r.text async for r in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints())]
        except ApiError as error:
            assert "no first response within 0.05s" in error.message
            result: str | int = error.status
        else:
            result = "".join(texts)
        silent = next(r for r in pool.replicas if r.endpoint.host == upstream.calls[0])
        assert silent.consecutive_failures == 1 and upstream.cancelled == 1  # the first try was cancelled
        assert len(upstream.calls) == 1 + retries and len(set(upstream.calls)) == len(upstream.calls)
        assert all(r.inflight == 0 for r in pool.replicas)
        return result

    assert asyncio.run(scenario()) == answer


class OnceBrokenUpstream(ScriptedUpstream):
    """The first call fails as ``how``: a connection that answers garbage, or silence."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.calls = how, 0

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        self.calls += 1
        if self.calls == 1 and self.how == "garbage":
            raise UpstreamUnavailable("malformed HTTP response: Expected HTTP/")
        if self.calls == 1:
            await asyncio.Event().wait()
        yield Response(text="ok")


@pytest.mark.parametrize(("how", "answer", "calls"), [("garbage", "ok", 2), ("silent", 504, 1)])
def test_a_single_replica_gets_a_fresh_connection_but_is_not_waited_on_twice(
    how: str, answer: str | int, calls: int
) -> None:
    async def scenario() -> tuple[str | int, int]:
        settings = RouterSettings(first_token_timeout_s=0.05, max_retries=2)
        pool = PoolState("a", "aggregated", replicas(1))
        upstream = OnceBrokenUpstream(how)
        dispatcher = Dispatcher(upstream, Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0)
        try:
            stream = dispatcher.stream(PoolTarget(pool, LeastInflight()), GenerateCall("m", {}, "id"), Hints())
            return "".join([r.text async for r in stream]), upstream.calls
        except ApiError as error:
            return error.status, upstream.calls

    assert asyncio.run(scenario()) == (answer, calls)


class DroppingUpstream(ScriptedUpstream):
    """The first replica streams two tokens and then drops the stream (``how``: its connection is
    lost, or it goes silent); whoever is called next streams the tokens it is asked for."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        self.calls.append((endpoint.host, dict(call.inputs)))
        if len(self.calls) == 1:
            yield Response(output_ids=[1])
            yield Response(output_ids=[2])
            if self.how == "lost":
                raise UpstreamUnavailable("connection reset by peer")
            await asyncio.Event().wait()
        start = len(call.inputs["ids"])  # type: ignore[arg-type]
        for token in range(start, start + int(call.inputs["left"])):  # type: ignore[call-overload]
            yield Response(output_ids=[token])


def _continue(call: GenerateCall, streamed: list[Response]) -> GenerateCall | None:
    got = [t for r in streamed for t in r.output_ids or ()]
    ids = [*call.inputs["ids"], *got]
    return GenerateCall(call.model, {"ids": ids, "left": call.inputs["left"] - len(got)}, call.request_id)


@pytest.mark.parametrize("how", ["lost", "silent"])
@pytest.mark.parametrize("resumable", [True, False])
@pytest.mark.parametrize("size", [2, 1])
def test_a_stream_its_replica_drops_midway_goes_on_on_another_replica(
    how: str, resumable: bool, size: int
) -> None:
    """With one replica, or every other one tried already, the stream goes on over a fresh
    connection to a replica tried before: a half-sent stream is worth it."""

    async def scenario() -> tuple[list[int], int | None]:
        settings = RouterSettings(token_timeout_s=0.05, max_retries=1, eject_after_failures=3)
        pool = PoolState("a", "aggregated", replicas(size))
        upstream = DroppingUpstream(how)
        dispatcher = Dispatcher(
            upstream, Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0
        )
        got: list[int] = []
        call = GenerateCall("m", {"ids": [0, 0, 0], "left": 5}, "id")
        try:
            async for r in dispatcher.stream(
                PoolTarget(pool, LeastInflight()), call, Hints(), resume=_continue if resumable else None
            ):
                got.extend(r.output_ids or ())
        except ApiError as error:
            return got, error.status
        finally:
            first = next(r for r in pool.replicas if r.endpoint.host == upstream.calls[0][0])
            recovered = size == 1 and resumable  # the same replica then answered: its streak ends
            assert first.consecutive_failures == (0 if recovered else 1)
            assert all(r.inflight == 0 for r in pool.replicas)
        hosts = [host for host, _ in upstream.calls]
        assert len(set(hosts)) == size  # the rest came from the other replica, if there is one
        assert upstream.calls[1][1] == {"ids": [0, 0, 0, 1, 2], "left": 3}
        return got, None

    got, status = asyncio.run(scenario())
    if resumable:
        assert (got, status) == ([1, 2, 5, 6, 7], None)  # the scripted replica numbers by position
    else:
        assert (got, status) == ([1, 2], 502 if how == "lost" else 504)


@pytest.mark.parametrize(
    ("size", "percent", "most_out"), [(4, 50, 2), (2, 50, 1), (1, 50, 1), (5, 10, 1), (4, 100, 4)]
)
def test_ejection_never_takes_more_than_max_ejection_percent_of_a_pool_out(
    size: int, percent: int, most_out: int
) -> None:
    async def scenario() -> list[Replica]:
        settings = RouterSettings(eject_after_failures=1, max_retries=8, max_ejection_percent=percent)
        pool = PoolState("a", "aggregated", replicas(size))
        dispatcher = Dispatcher(
            ScriptedUpstream(), Admission(settings), settings, RouterMetrics(lambda: [pool]), lambda: 0
        )
        target = PoolTarget(pool, LeastInflight())
        for _ in range(3 * size):  # every replica refuses connections
            with pytest.raises(ApiError) as error:
                async for _response in dispatcher.stream(target, GenerateCall("m", {}, "id"), Hints()):
                    pass
            assert error.value.status == 503
        return pool.replicas

    pool = asyncio.run(scenario())
    assert sum(r.ejected for r in pool) == most_out
    assert sum(r.available for r in pool) == size - most_out


