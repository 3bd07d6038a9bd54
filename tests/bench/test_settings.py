"""Bench options, datasets, the Poisson schedule and the progress display: the messages users see."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from generator.bench.progress import Progress
from generator.bench.records import RequestRecord
from generator.bench.runner import poisson_offsets
from generator.bench.settings import (
    BenchError,
    LoadPoint,
    parse_concurrency,
    parse_endpoints,
    parse_models,
    parse_rates,
)
from generator.bench.workload import Prompt, load_dataset
from generator.commands import bench as command
from generator.errors import TritonstackError


def test_endpoints_accept_base_or_v1_urls() -> None:
    assert parse_endpoints(["nim=http://h:8000", "fp4=https://h:9000/v1/"]) == [
        ("nim", "http://h:8000"),
        ("fp4", "https://h:9000"),
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["http://h:8000"], "write NAME=URL"),
        (["a=ftp://h"], r"is not an http\(s\) URL"),
        (["a=http://h:1", "a=http://h:2"], "used twice"),
        ([], "at least one --endpoint"),
    ],
)
def test_bad_endpoints_are_explained(values: list[str], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_endpoints(values)


def test_models_default_and_per_stack() -> None:
    assert parse_models(["llama", "b=other"], ["a", "b"]) == {"a": "llama", "b": "other"}
    with pytest.raises(BenchError, match="no model for endpoint 'b'"):
        parse_models(["a=llama"], ["a", "b"])
    with pytest.raises(BenchError, match="no --endpoint named 'c'"):
        parse_models(["c=llama"], ["a", "b"])


def test_load_levels() -> None:
    assert parse_concurrency("1,2,4,8") == [LoadPoint("concurrency", v) for v in (1, 2, 4, 8)]
    assert [p.label for p in parse_rates("0.5,2")] == ["rate=0.5/s", "rate=2/s"]
    with pytest.raises(BenchError, match="whole numbers"):
        parse_concurrency("1,two")
    with pytest.raises(BenchError, match="1 or more"):
        parse_concurrency("0,1")
    with pytest.raises(BenchError, match="above 0"):
        parse_rates("0")


def test_datasets_jsonl_and_text(tmp_path: Path) -> None:
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "hello"}\n\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    workload = load_dataset(jsonl)
    assert workload.prompts == (Prompt(text="hello"), Prompt(messages=({"role": "user", "content": "hi"},)))
    assert workload.prompt(2) == Prompt(text="hello")  # prompts wrap around in file order
    with pytest.raises(BenchError, match="use --api chat"):
        workload.check_api("completions", "--dataset prompts.jsonl")
    text = tmp_path / "prompts.txt"
    text.write_text("one\n  \ntwo\n")
    assert [p.text for p in load_dataset(text).prompts] == ["one", "two"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n{"prompt": 3}\n', r"prompts\.jsonl:2: needs 'prompt'"),
        ("{oops\n", r"prompts\.jsonl:1: not valid JSON"),
        ("\n\n", "holds no prompts"),
    ],
)
def test_bad_datasets_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(BenchError, match=message):
        load_dataset(path)


def test_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read it"):
        load_dataset(tmp_path / "absent.jsonl")


def test_poisson_schedule_is_seeded_and_has_the_asked_rate() -> None:
    offsets = poisson_offsets(4.0, 4000, seed=7)
    assert offsets == poisson_offsets(4.0, 4000, seed=7)
    assert offsets != poisson_offsets(4.0, 4000, seed=8)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert len(offsets) / offsets[-1] == pytest.approx(4.0, rel=0.05)


def _parse(argv: list[str]):
    parser = command.argparse.ArgumentParser()
    command.configure(parser)
    return parser.parse_args(argv)


def test_command_options_become_settings() -> None:
    args = _parse(["--endpoint", "a=http://h:1", "--endpoint", "b=http://h:2", "--model", "m",
                   "--request-rate", "1,2", "--baseline", "b", "--api-key-env", "MY_KEY"])
    settings = command.settings_from_args(args, {"MY_KEY": "secret"})
    assert [p.kind for p in settings.load_points] == ["rate", "rate"]
    assert settings.api_key == "secret" and settings.recorded()["api_key"] is True
    assert settings.endpoint("b").model == "m"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--baseline", "zzz"], "no --endpoint has that name"),
        (["--requests", "0"], "--requests 0: must be 1 or more"),
        (["--stall-timeout", "0"], "must be above 0 seconds"),
    ],
)
def test_command_rejects_bad_options(extra: list[str], message: str) -> None:
    args = _parse(["--endpoint", "a=http://h:1", "--model", "m", *extra])
    with pytest.raises(TritonstackError, match=message):
        command.settings_from_args(args, {})


def test_progress_lines_for_logs_and_terminals() -> None:
    done, failed = RequestRecord(0, 0, 0.0), RequestRecord(1, 0, 0.0, error="stall")
    log = io.StringIO()
    progress = Progress(log, interactive=False)
    progress.start("nim", "c=2", 2)
    progress.request_done(done)
    progress.request_done(failed)
    progress.finish()
    assert log.getvalue() == "  nim c=2: 2/2 requests, 1 failed\n"
    terminal = io.StringIO()
    progress = Progress(terminal, interactive=True)
    progress.start("nim", "serial", 1)
    progress.request_done(done)
    progress.finish()
    assert terminal.getvalue() == "\r  nim serial: 0/1 requests\r  nim serial: 1/1 requests\n"
