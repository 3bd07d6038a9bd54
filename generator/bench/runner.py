"""Drives the load: warm-up, a serial run, then a closed-loop concurrency sweep or Poisson rates.

Load models (recorded with every result, because tools default differently):

* serial — one request at a time; gives TTFT, decode tokens/s and wall time without queueing;
* concurrency c — closed loop: c clients, each sends its next request when the previous ends;
* rate r — open loop: requests arrive as a Poisson process of r per second regardless of how
  fast the server answers (exponential gaps from a seeded generator, so every stack gets the same
  arrival schedule).

Warm-up requests run first and are excluded from every figure. Stacks run one after the other,
never at the same time, so they do not compete for a shared machine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from generator.bench.client import StreamingClient
from generator.bench.progress import Progress
from generator.bench.records import RequestRecord
from generator.bench.settings import BenchError, BenchSettings, Endpoint, LoadPoint
from generator.bench.tokens import TokenCounter
from generator.bench.workload import Workload

__all__ = ["PointRun", "StackRun", "Runner", "poisson_offsets"]

Clock = Callable[[], float]


@dataclass
class PointRun:
    """The measured requests of one load point and the span they ran in."""

    point: LoadPoint
    started_at: float
    ended_at: float
    records: list[RequestRecord]

    @property
    def duration_s(self) -> float:
        return self.ended_at - self.started_at


@dataclass
class StackRun:
    endpoint: Endpoint
    warmup: list[RequestRecord]
    points: list[PointRun]


def poisson_offsets(rate_per_s: float, count: int, seed: int) -> list[float]:
    """Arrival times (seconds from the start) of a Poisson process; the first request goes at 0."""
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(count):
        offsets.append(now)
        now += rng.expovariate(rate_per_s)
    return offsets


class Runner:
    def __init__(
        self,
        client: StreamingClient,
        workload: Workload,
        counter: TokenCounter,
        clock: Clock,
        progress: Progress,
    ) -> None:
        self._client = client
        self._workload = workload
        self._counter = counter
        self._clock = clock
        self._progress = progress

    async def run(self, settings: BenchSettings) -> list[StackRun]:
        return [await self.run_stack(endpoint, settings) for endpoint in settings.endpoints]

    async def run_stack(self, endpoint: Endpoint, settings: BenchSettings) -> StackRun:
        warmup = await self.warmup(endpoint, settings.warmup_requests)
        points = [await self.closed_loop(endpoint, LoadPoint("serial", 1), settings.serial_requests)]
        for point in settings.load_points:
            if point.kind == "rate":
                points.append(await self.open_loop(endpoint, point, settings.requests_per_point, settings.seed))
            else:
                points.append(await self.closed_loop(endpoint, point, settings.requests_per_point))
        return StackRun(endpoint=endpoint, warmup=warmup, points=points)

    async def warmup(self, endpoint: Endpoint, count: int) -> list[RequestRecord]:
        """Serial requests whose figures are thrown away; all of them failing stops the benchmark."""
        if count == 0:
            return []
        run = await self.closed_loop(endpoint, LoadPoint("serial", 1), count, label="warm-up")
        failures = [r for r in run.records if not r.ok]
        if len(failures) == len(run.records):
            last = failures[-1]
            raise BenchError(
                f"endpoint {endpoint.name} ({endpoint.base_url}): all {count} warm-up "
                f"requests failed; the last with {last.error}: {last.error_detail}"
            )
        return run.records

    async def closed_loop(
        self, endpoint: Endpoint, point: LoadPoint, count: int, label: str | None = None
    ) -> PointRun:
        self._progress.start(endpoint.name, label or point.label, count)
        records: list[RequestRecord] = []
        next_index = iter(range(count))

        async def client_loop() -> None:
            for index in next_index:  # shared iterator: each index is taken by exactly one client
                records.append(await self._send(endpoint, index))

        started = self._clock()
        await asyncio.gather(*(client_loop() for _ in range(int(point.value))))
        ended = self._clock()
        self._progress.finish()
        return self._finished(point, started, ended, records)

    async def open_loop(self, endpoint: Endpoint, point: LoadPoint, count: int, seed: int) -> PointRun:
        self._progress.start(endpoint.name, point.label, count)
        offsets = poisson_offsets(point.value, count, seed)
        started = self._clock()

        async def arrive(index: int, offset: float) -> RequestRecord:
            await asyncio.sleep(max(0.0, started + offset - self._clock()))
            return await self._send(endpoint, index)

        records = await asyncio.gather(*(arrive(i, offset) for i, offset in enumerate(offsets)))
        ended = self._clock()
        self._progress.finish()
        return self._finished(point, started, ended, list(records))

    def _finished(self, point: LoadPoint, started: float, ended: float, records: list[RequestRecord]) -> PointRun:
        # Tokens are counted after the point ends: re-encoding with a tokenizer costs CPU that
        # would otherwise delay the timestamps of requests still streaming.
        for record in records:
            self._counter.count(record)
        records.sort(key=lambda r: r.index)
        return PointRun(point=point, started_at=started, ended_at=ended, records=records)

    async def _send(self, endpoint: Endpoint, index: int) -> RequestRecord:
        prompt_index = index % len(self._workload.prompts)
        record = await self._client.send(endpoint, self._workload.prompt(index), index, prompt_index)
        self._progress.request_done(record)
        return record
