"""Golden tests of the bench tables, delta table, JSON document and CSV; the JSON schema; PNGs.

The runs are built by hand with fixed timestamps, so every figure is known. Refresh the golden
files after an intended change with ``pytest tests/bench/test_report.py --update-golden`` and review
the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from generator.bench.plots import plot_throughput, plot_ttft
from generator.bench.records import RequestRecord
from generator.bench.report import (
    SCHEMA_PATH,
    delta_table,
    result_csv,
    result_document,
    result_json,
    stack_table,
)
from generator.bench.runner import PointRun, StackRun
from generator.bench.settings import BenchSettings, Endpoint, LoadPoint
from generator.bench.stats import deltas, summarize
from tests.support import paths

GOLDEN = paths.GOLDEN / "bench"
VERSIONS = {
    "tritonstack": "0.1.0",
    "python": "3.11.7",
    "httpx": "0.28.1",
    "numpy": "2.0.0",
    "transformers": None,
    "platform": "linux-x86_64",
}


def _record(index: int, sent: float, ttft: float, gap: float, tokens: int, **extra) -> RequestRecord:
    times = [sent + ttft + i * gap for i in range(tokens)]
    record = RequestRecord(index=index, prompt_index=0, sent_at=sent, ended_at=times[-1] + 0.001,
                           content_times=times, text="x" * tokens, finish_reason="length",
                           usage_completion_tokens=tokens, output_tokens=tokens, token_source="usage")
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _failed(index: int, sent: float, kind: str, detail: str) -> RequestRecord:
    return RequestRecord(index=index, prompt_index=0, sent_at=sent, ended_at=sent + 0.01, error=kind,
                         error_detail=detail, token_source="chunks")


def _stack(name: str, ttft: float, gap: float) -> StackRun:
    """Serial: 4 requests; c=1: 2 requests; c=2: 4 requests, one of which stalls."""
    serial = [_record(i, 10.0 + i, ttft + 0.01 * i, gap, 20) for i in range(4)]
    c1 = [_record(i, 20.0 + i, ttft, gap, 20) for i in range(2)]
    c2 = [_record(0, 30.0, ttft, gap, 20), _record(1, 30.0, ttft * 1.5, gap, 20),
          _record(2, 30.5, ttft, gap * 2, 20),
          _failed(3, 30.5, "stall", "no data for 60 s while the stream was open")]
    return StackRun(
        endpoint=Endpoint(name, f"http://{name}.example:8000", "llama-3.1-8b"),
        warmup=[_record(0, 1.0, ttft, gap, 20)],
        points=[
            PointRun(LoadPoint("serial", 1), 10.0, 10.0 + 3 + ttft + 0.03 + 19 * gap + 0.001, serial),
            PointRun(LoadPoint("concurrency", 1), 20.0, 21.0 + ttft + 19 * gap + 0.001, c1),
            PointRun(LoadPoint("concurrency", 2), 30.0, 30.5 + ttft + 38 * gap + 0.001, c2),
        ],
    )


@pytest.fixture
def example():
    settings = BenchSettings(
        endpoints=(Endpoint("nim", "http://nim.example:8000", "llama-3.1-8b"),
                   Endpoint("nvfp4", "http://nvfp4.example:8000", "llama-3.1-8b")),
        load_points=(LoadPoint("concurrency", 1), LoadPoint("concurrency", 2)),
        serial_requests=4, requests_per_point=4, warmup_requests=1, baseline="nim",
    )
    runs = [_stack("nim", ttft=0.120, gap=0.010), _stack("nvfp4", ttft=0.080, gap=0.008)]
    summaries = [summarize(r) for r in runs]
    return settings, runs, summaries, deltas(summaries, "nim")


def _golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; create it with --update-golden"
    assert text == path.read_text(encoding="utf-8")


def test_stack_tables_golden(example, update_golden: bool) -> None:
    _, _, summaries, found = example
    text = "\n".join(stack_table(s) for s in summaries) + "\n" + delta_table(found, "nim")
    _golden("tables.txt", text, update_golden)


def test_result_json_golden_and_valid(example, update_golden: bool) -> None:
    settings, runs, summaries, found = example
    document = result_document(settings, runs, summaries, found, VERSIONS, "2026-01-01T00:00:00+00:00")
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    _golden("results.json", result_json(document), update_golden)


def test_result_csv_golden(example, update_golden: bool) -> None:
    _, _, summaries, _ = example
    _golden("results.csv", result_csv(summaries), update_golden)


def test_figures_follow_their_definitions(example) -> None:
    _, runs, summaries, found = example
    nim = summaries[0]
    serial = nim.serial
    # 20 tokens: 19 gaps of 10 ms after the first content; decode tok/s = 19 / (19 × 0.010 + 0.001).
    assert serial.decode_tokens_per_s.p50 == pytest.approx(19 / 0.191)
    assert serial.itl_s.p50 == pytest.approx(0.010)
    assert serial.ttft_s.p50 == pytest.approx(0.135)  # 0.120, 0.130, 0.140, 0.150
    c2 = nim.point("concurrency", 2)
    assert (c2.requests, c2.completed, c2.errors) == (4, 3, {"stall": 1})
    assert c2.output_tokens == 60
    assert c2.aggregate_tokens_per_s * c2.duration_s == pytest.approx(60)
    ttft_delta = next(d for d in found if d.metric == "TTFT p50 (ms)")
    assert ttft_delta.percent == pytest.approx((95.0 - 135.0) / 135.0 * 100)


def test_schema_rejects_a_document_missing_settings(example) -> None:
    settings, runs, summaries, found = example
    document = result_document(settings, runs, summaries, found, VERSIONS, "2026-01-01T00:00:00+00:00")
    del document["settings"]["max_tokens"]
    with pytest.raises(jsonschema.ValidationError, match="max_tokens"):
        jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def test_plots_are_png_files_with_content(example, tmp_path: Path) -> None:
    _, runs, summaries, _ = example
    plot_throughput(summaries, tmp_path / "throughput.png")
    ttfts = {run.endpoint.name: [r.ttft_s for r in run.points[0].records] for run in runs}
    plot_ttft(summaries, ttfts, tmp_path / "ttft.png")
    for name in ("throughput.png", "ttft.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
