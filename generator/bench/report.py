"""Benchmark results as text tables, one JSON document, and CSV.

Everything here is a pure function from summaries to text, so tables and JSON are golden-tested;
writing files is the caller's last step. The JSON document follows ``result.schema.json`` (schema
``tritonstack.bench/v1``) and records the exact settings and client versions next to the figures.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from generator.bench.records import RequestRecord
from generator.bench.runner import StackRun
from generator.bench.settings import BenchSettings
from generator.bench.stats import Delta, Distribution, PointSummary, StackSummary

__all__ = [
    "SCHEMA",
    "SCHEMA_PATH",
    "client_versions",
    "stack_table",
    "delta_table",
    "result_document",
    "result_json",
    "result_csv",
]

SCHEMA = "tritonstack.bench/v1"
SCHEMA_PATH = Path(__file__).with_name("result.schema.json")

DEFINITIONS = {
    "ttft": "send to the first streamed chunk with non-empty content (monotonic clock)",
    "itl": "gap between successive content chunks; per token when the server streams one token per chunk",
    "decode_tokens_per_s": "(output tokens - 1) / (end - first content), per request; equals 1 / TPOT",
    "latency": "send to the end of the stream (wall time of one request)",
    "aggregate_tokens_per_s": "output tokens of completed requests / span of the load point (first send to last end)",
    "serial": "one request at a time",
    "concurrency": "closed loop: c clients, each sends its next request when its previous one ends",
    "rate": "open loop: Poisson arrivals at the given requests per second, same seeded schedule for every stack",
    "warmup": "warm-up requests are excluded from every figure",
    "errors": "failed requests are counted per kind and excluded from distributions and token totals",
}

TABLE_COLUMNS = (
    "load",
    "reqs",
    "failed",
    "TTFT p50 ms",
    "p90 ms",
    "p99 ms",
    "ITL p50 ms",
    "decode tok/s p50",
    "wall p50 s",
    "agg tok/s",
    "req/s",
)


def client_versions(with_tokenizer: bool) -> dict[str, str | None]:
    """Versions of what measured: our package, the HTTP client, and the tokenizer stack if used."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "tritonstack": version("tritonstack"),
        "python": platform.python_version(),
        "httpx": version("httpx"),
        "numpy": version("numpy"),
        "transformers": version("transformers") if with_tokenizer else None,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _point_row(point: PointSummary) -> list[str]:
    return [
        point.label,
        str(point.requests),
        str(point.failed),
        _fmt(point.ttft_s.p50, 1, 1000),
        _fmt(point.ttft_s.p90, 1, 1000),
        _fmt(point.ttft_s.p99, 1, 1000),
        _fmt(point.itl_s.p50, 2, 1000),
        _fmt(point.decode_tokens_per_s.p50, 1),
        _fmt(point.latency_s.p50, 3),
        _fmt(point.aggregate_tokens_per_s if point.completed else None, 1),
        _fmt(point.requests_per_s if point.completed else None, 2),
    ]


def _figure(value: float | None) -> str:
    """A delta-table figure: as many decimals as its size needs (135.0, 99.48, 0.326)."""
    if value is None:
        return "-"
    digits = 1 if abs(value) >= 100 else 2 if abs(value) >= 1 else 3
    return f"{value:.{digits}f}"


def _columns(
    header: tuple[str, ...] | list[str], rows: list[list[str]], left: int = 1, indent: str = "  "
) -> list[str]:
    """Left-align the first ``left`` (label) columns, right-align the figures, two spaces apart."""
    widths = [max(len(row[i]) for row in [list(header), *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        aligned = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return (indent + "  ".join(aligned)).rstrip()

    return [line(list(header)), *(line(row) for row in rows)]


def stack_table(stack: StackSummary) -> str:
    lines = [
        f"{stack.name}: {stack.base_url} model {stack.model}",
        f"  {stack.token_note}",
        f"  warm-up: {stack.warmup_requests} request(s) excluded"
        + (f", {stack.warmup_failed} of them failed" if stack.warmup_failed else ""),
    ]
    tokens = sum(p.output_tokens for p in stack.points)
    chunks = sum(p.chunks for p in stack.points)
    if chunks and abs(tokens / chunks - 1.0) > 0.01:
        # Servers that detokenize incrementally hold back partial characters/words, so some
        # chunks carry several tokens; ITL then measures chunk gaps, not token gaps.
        lines.append(f"  {tokens / chunks:.2f} tokens per streamed chunk: ITL is the gap between chunks")
    lines += _columns(TABLE_COLUMNS, [_point_row(p) for p in stack.points])
    for point in stack.points:
        if point.errors:
            kinds = ", ".join(f"{kind} {count}" for kind, count in point.errors.items())
            lines.append(f"  {point.label}: {point.failed} of {point.requests} failed ({kinds})")
            for kind, detail in point.error_examples.items():
                lines.append(f"    {kind}: {detail}")
    return "\n".join(lines) + "\n"


def delta_table(deltas: list[Delta], baseline: str) -> str:
    lines = [f"against baseline {baseline} (latency: lower is better; tokens/s: higher is better)"]
    rows = []
    for delta in deltas:
        percent = delta.percent
        if percent is None:
            change = "-"
        elif round(percent, 1) == 0:
            change = "+0.0%"
        else:
            better = (percent > 0) == delta.higher_is_better
            change = f"{percent:+.1f}%" + (" better" if better else " worse")
        rows.append([delta.stack, delta.metric, _figure(delta.baseline), _figure(delta.value), change])
    lines += _columns(("stack", "metric", "baseline", "value", "delta"), rows, left=2)
    return "\n".join(lines) + "\n"


def _round(value: float | None) -> float | None:
    # Microsecond / micro-token resolution: enough for any figure, and stable in golden files.
    return None if value is None else round(value, 6)


def _dist(dist: Distribution) -> dict[str, Any]:
    return {key: (value if key == "count" else _round(value)) for key, value in dist.as_dict().items()}


def _request(record: RequestRecord) -> dict[str, Any]:
    return {
        "index": record.index,
        "prompt_index": record.prompt_index,
        "ttft_s": _round(record.ttft_s),
        "latency_s": _round(record.latency_s),
        "output_tokens": record.output_tokens,
        "token_source": record.token_source,
        "chunks": len(record.content_times),
        "finish_reason": record.finish_reason,
        "error": record.error,
        "error_detail": record.error_detail or None,
    }


def _point(point: PointSummary, records: list[RequestRecord]) -> dict[str, Any]:
    tokens_per_chunk = point.tokens_per_chunk
    return {
        "kind": point.kind,
        "value": point.value,
        "label": point.label,
        "requests": point.requests,
        "completed": point.completed,
        "failed": point.failed,
        "errors": dict(point.errors),
        "error_examples": dict(point.error_examples),
        "duration_s": _round(point.duration_s),
        "output_tokens": point.output_tokens,
        "chunks": point.chunks,
        "tokens_per_chunk": _round(tokens_per_chunk),
        "token_source": point.token_source,
        "aggregate_tokens_per_s": _round(point.aggregate_tokens_per_s),
        "requests_per_s": _round(point.requests_per_s),
        "ttft_s": _dist(point.ttft_s),
        "itl_s": _dist(point.itl_s),
        "decode_tokens_per_s": _dist(point.decode_tokens_per_s),
        "latency_s": _dist(point.latency_s),
        "per_request": [_request(r) for r in records],
    }


def result_document(
    settings: BenchSettings,
    runs: list[StackRun],
    summaries: list[StackSummary],
    deltas: list[Delta],
    versions: dict[str, str | None],
    created_utc: str,
) -> dict[str, Any]:
    stacks = []
    for run, summary in zip(runs, summaries):
        stacks.append(
            {
                "name": summary.name,
                "base_url": summary.base_url,
                "model": summary.model,
                "token_source": summary.token_source,
                "token_note": summary.token_note,
                "warmup": {"requests": summary.warmup_requests, "failed": summary.warmup_failed},
                "points": [_point(p, r.records) for p, r in zip(summary.points, run.points)],
            }
        )
    return {
        "schema": SCHEMA,
        "created_utc": created_utc,
        "client": versions,
        "settings": settings.recorded(),
        "definitions": DEFINITIONS,
        "stacks": stacks,
        "baseline": settings.baseline,
        "deltas": [
            {
                "stack": d.stack,
                "metric": d.metric,
                "baseline": _round(d.baseline),
                "value": _round(d.value),
                "percent": _round(d.percent),
                "higher_is_better": d.higher_is_better,
            }
            for d in deltas
        ],
    }


def result_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


CSV_COLUMNS: tuple[tuple[str, Callable[[StackSummary, PointSummary], object]], ...] = (
    ("stack", lambda s, p: s.name),
    ("model", lambda s, p: s.model),
    ("load_kind", lambda s, p: p.kind),
    ("load_value", lambda s, p: f"{p.value:g}"),
    ("requests", lambda s, p: p.requests),
    ("completed", lambda s, p: p.completed),
    ("failed", lambda s, p: p.failed),
    ("errors", lambda s, p: ";".join(f"{k}={v}" for k, v in p.errors.items())),
    ("token_source", lambda s, p: p.token_source),
    ("output_tokens", lambda s, p: p.output_tokens),
    ("duration_s", lambda s, p: _csv_num(p.duration_s)),
    ("aggregate_tokens_per_s", lambda s, p: _csv_num(p.aggregate_tokens_per_s)),
    ("requests_per_s", lambda s, p: _csv_num(p.requests_per_s)),
    ("ttft_p50_s", lambda s, p: _csv_num(p.ttft_s.p50)),
    ("ttft_p90_s", lambda s, p: _csv_num(p.ttft_s.p90)),
    ("ttft_p99_s", lambda s, p: _csv_num(p.ttft_s.p99)),
    ("itl_p50_s", lambda s, p: _csv_num(p.itl_s.p50)),
    ("decode_tokens_per_s_p50", lambda s, p: _csv_num(p.decode_tokens_per_s.p50)),
    ("latency_p50_s", lambda s, p: _csv_num(p.latency_s.p50)),
)


def _csv_num(value: float | None) -> str:
    return "" if value is None else f"{_round(value):g}"


def result_csv(summaries: list[StackSummary]) -> str:
    """One row per stack and load point."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in CSV_COLUMNS])
    for stack in summaries:
        for point in stack.points:
            writer.writerow([get(stack, point) for _, get in CSV_COLUMNS])
    return buffer.getvalue()
