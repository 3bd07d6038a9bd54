"""Figures from request records: distributions per load point and deltas against a baseline stack.

Definitions (written down because benchmark tools differ on them):

* TTFT — send to the first chunk with non-empty content.
* ITL — gaps between successive content chunks (inter-token latency when a server streams one
  token per chunk; ``tokens_per_chunk`` shows whether it does).
* decode tokens/s — per request, (output tokens − 1) / (end − first content), i.e. 1 / TPOT.
* wall — per request, send to the end of the stream.
* aggregate tokens/s — output tokens of all completed requests of a point / the point's span
  (first send to last end); so aggregate tokens/s × duration = output tokens.

Only completed requests feed the distributions and token totals; failed ones are counted per kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.bench.records import ERROR_KINDS
from generator.bench.runner import PointRun, StackRun
from generator.bench.tokens import describe_source

__all__ = ["Distribution", "PointSummary", "StackSummary", "Delta", "summarize_point", "summarize", "deltas"]

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Distribution:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Distribution:
        if not values:
            return cls(0, None, None, None, None, None, None)
        data = np.asarray(values, dtype=float)
        p50, p90, p99 = (float(v) for v in np.percentile(data, PERCENTILES))
        return cls(len(values), float(data.mean()), p50, p90, p99, float(data.min()), float(data.max()))

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "min": self.min,
            "max": self.max,
        }


@dataclass(frozen=True)
class PointSummary:
    kind: str
    value: float
    label: str
    requests: int
    completed: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    duration_s: float
    output_tokens: int
    chunks: int
    token_source: str
    aggregate_tokens_per_s: float
    requests_per_s: float
    ttft_s: Distribution
    itl_s: Distribution
    decode_tokens_per_s: Distribution
    latency_s: Distribution

    @property
    def failed(self) -> int:
        return self.requests - self.completed

    @property
    def tokens_per_chunk(self) -> float | None:
        return self.output_tokens / self.chunks if self.chunks else None


@dataclass(frozen=True)
class StackSummary:
    name: str
    base_url: str
    model: str
    warmup_requests: int
    warmup_failed: int
    token_source: str
    token_note: str
    points: list[PointSummary]

    @property
    def serial(self) -> PointSummary:
        return self.points[0]

    def point(self, kind: str, value: float) -> PointSummary | None:
        return next((p for p in self.points if p.kind == kind and p.value == value), None)


@dataclass(frozen=True)
class Delta:
    """One figure of one stack against the same figure of the baseline stack."""

    stack: str
    metric: str
    baseline: float | None
    value: float | None
    higher_is_better: bool

    @property
    def percent(self) -> float | None:
        if self.baseline is None or self.value is None or self.baseline == 0:
            return None
        return (self.value - self.baseline) / self.baseline * 100.0


def summarize_point(run: PointRun) -> PointSummary:
    done = [r for r in run.records if r.ok]
    errors = {kind: 0 for kind in ERROR_KINDS}
    examples: dict[str, str] = {}
    for record in run.records:
        if record.error is not None:
            errors[record.error] += 1
            examples.setdefault(record.error, record.error_detail)
    tokens = sum(r.output_tokens for r in done)
    duration = run.duration_s
    source, _ = describe_source({r.token_source for r in done})
    return PointSummary(
        kind=run.point.kind,
        value=run.point.value,
        label=run.point.label,
        requests=len(run.records),
        completed=len(done),
        errors={kind: n for kind, n in errors.items() if n},
        error_examples=examples,
        duration_s=duration,
        output_tokens=tokens,
        chunks=sum(len(r.content_times) for r in done),
        token_source=source,
        aggregate_tokens_per_s=tokens / duration if duration > 0 else 0.0,
        requests_per_s=len(done) / duration if duration > 0 else 0.0,
        ttft_s=Distribution.of([r.ttft_s for r in done if r.ttft_s is not None]),
        itl_s=Distribution.of([gap for r in done for gap in r.chunk_gaps_s]),
        decode_tokens_per_s=Distribution.of([v for r in done if (v := r.decode_tokens_per_s) is not None]),
        latency_s=Distribution.of([r.latency_s for r in done]),
    )


def summarize(run: StackRun) -> StackSummary:
    points = [summarize_point(p) for p in run.points]
    measured = [r for p in run.points for r in p.records if r.ok]
    source, note = describe_source({r.token_source for r in measured})
    return StackSummary(
        name=run.endpoint.name,
        base_url=run.endpoint.base_url,
        model=run.endpoint.model,
        warmup_requests=len(run.warmup),
        warmup_failed=sum(1 for r in run.warmup if not r.ok),
        token_source=source,
        token_note=note,
        points=points,
    )


def deltas(stacks: list[StackSummary], baseline: str) -> list[Delta]:
    """Serial TTFT p50, decode tokens/s p50 and wall p50, then aggregate tokens/s per load point."""
    base = next(s for s in stacks if s.name == baseline)
    found: list[Delta] = []
    for stack in stacks:
        if stack.name == baseline:
            continue
        found += [
            Delta(stack.name, "TTFT p50 (ms)", _ms(base.serial.ttft_s.p50), _ms(stack.serial.ttft_s.p50), False),
            Delta(
                stack.name,
                "decode tok/s p50",
                base.serial.decode_tokens_per_s.p50,
                stack.serial.decode_tokens_per_s.p50,
                True,
            ),
            Delta(stack.name, "wall p50 (s)", base.serial.latency_s.p50, stack.serial.latency_s.p50, False),
        ]
        for point in base.points[1:]:
            other = stack.point(point.kind, point.value)
            found.append(
                Delta(
                    stack.name,
                    f"agg tok/s {point.label}",
                    point.aggregate_tokens_per_s,
                    other.aggregate_tokens_per_s if other else None,
                    True,
                )
            )
    return found


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
