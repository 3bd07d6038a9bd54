"""The bench client and runner against a test fake OpenAI-compatible server (fault injection).

``FakeOpenAIServer`` is a fake written for these tests, and named as one: a Starlette app served by
a real uvicorn on a free port, streaming a fixed text as OpenAI SSE chunks, with controllable
delays, HTTP errors, error events, stalls and connections closed mid-stream. Real HTTP, real SSE,
real sockets; only the language model is absent. The end-to-end test against the router and the
reference engine is in tests/bench/test_stack.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from generator.bench.client import RequestOptions, StreamingClient, http_client
from generator.bench.progress import Progress
from generator.bench.report import SCHEMA_PATH, stack_table
from generator.bench.runner import Runner
from generator.bench.settings import BenchSettings, Endpoint, LoadPoint, Timeouts
from generator.bench.stats import summarize
from generator.bench.tokens import TokenCounter
from generator.bench.workload import Workload
from generator.cli import main as cli_main
from generator.commands.bench import EXIT_REQUESTS_FAILED

FIXED_WORDS = "the quick brown fox jumps over the lazy dog".split()


@dataclass
class FakeBehaviour:
    """What the fake server does with the next requests; tests change it between runs."""

    words_per_chunk: int = 1
    first_content_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    send_usage: bool = True
    http_status: int | None = None  # answer every request with this error status
    fail_every: int = 0  # answer every n-th request (1-based) with HTTP 500
    close_after_chunks: int | None = None  # drop the connection after this many content chunks
    stall_after_chunks: int | None = None  # stop sending (keep the connection) after this many
    error_event_after_chunks: int | None = None  # send an OpenAI error object in the stream
    required_key: str | None = None
    answer_json: bool = False  # ignore stream=true and answer with one JSON body
    seen: list[dict] = field(default_factory=list)


class FakeOpenAIServer:
    """A test fake of an OpenAI-compatible streaming server on 127.0.0.1, free port."""

    def __init__(self) -> None:
        self.behaviour = FakeBehaviour()
        self._count = 0
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._handle, methods=["POST"]),
                Route("/v1/completions", self._handle, methods=["POST"]),
            ]
        )
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    async def _handle(self, request: Request):
        body = await request.json()
        behaviour = self.behaviour
        with self._lock:
            self._count += 1
            number = self._count
        behaviour.seen.append({"path": request.url.path, "body": body, "auth": request.headers.get("authorization")})
        if behaviour.required_key and request.headers.get("authorization") != f"Bearer {behaviour.required_key}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        if behaviour.http_status is not None:
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=behaviour.http_status)
        if behaviour.fail_every and number % behaviour.fail_every == 0:
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=500)
        chat = request.url.path.endswith("chat/completions")
        if behaviour.answer_json:
            return JSONResponse({"id": "fake", "choices": [{"index": 0, "text": " ".join(FIXED_WORDS)}]})
        return StreamingResponse(self._events(behaviour, chat, body["max_tokens"]), media_type="text/event-stream")

    async def _events(self, behaviour: FakeBehaviour, chat: bool, max_tokens: int):
        def chunk(content: str, finish: str | None = None) -> str:
            if chat:
                delta = {"content": content} if content else {"role": "assistant", "content": ""}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": content, "finish_reason": finish}
            return "data: " + json.dumps({"id": "fake", "object": "chunk", "choices": [choice]}) + "\n\n"

        words = FIXED_WORDS[:max_tokens]
        yield chunk("")  # an empty first chunk (the role, for chat): TTFT must not stop here
        await asyncio.sleep(behaviour.first_content_delay_s)
        pieces = [words[i : i + behaviour.words_per_chunk] for i in range(0, len(words), behaviour.words_per_chunk)]
        for sent, piece in enumerate(pieces):
            if sent == behaviour.close_after_chunks:
                raise ConnectionAbortedError("test fake: closing mid-stream")
            if sent == behaviour.stall_after_chunks:
                await asyncio.sleep(3600)
            if sent == behaviour.error_event_after_chunks:
                yield "data: " + json.dumps({"error": {"message": "injected engine failure", "code": 500}}) + "\n\n"
                return
            if sent:
                await asyncio.sleep(behaviour.chunk_delay_s)
            yield chunk(("" if sent == 0 else " ") + " ".join(piece))
        yield chunk("", finish="length" if len(words) == max_tokens else "stop")
        if behaviour.send_usage:
            usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
            yield "data: " + json.dumps({"id": "fake", "choices": [], "usage": usage}) + "\n\n"
        yield "data: [DONE]\n\n"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(fake_server: FakeOpenAIServer) -> FakeOpenAIServer:
    fake_server.behaviour = FakeBehaviour()
    return fake_server


@pytest.fixture(scope="module")
def word_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Hugging Face fast tokenizer (word level), built locally: one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(sorted(set(FIXED_WORDS)))}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    directory = tmp_path_factory.mktemp("word-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(str(directory))
    return directory


def _settings(url: str, **overrides) -> BenchSettings:
    values = dict(
        endpoints=(Endpoint("fake", url, "fake-model"),),
        warmup_requests=1,
        serial_requests=3,
        load_points=(LoadPoint("concurrency", 1), LoadPoint("concurrency", 3)),
        requests_per_point=6,
        max_tokens=9,
        timeouts=Timeouts(connect_s=5, stall_s=0.5, request_s=30),
    )
    values.update(overrides)
    return BenchSettings(**values)


def _bench(settings: BenchSettings, tokenizer=None, stderr: io.StringIO | None = None):
    async def go():
        options = RequestOptions(
            settings.api, settings.max_tokens, settings.ignore_eos, settings.seed, settings.api_key, settings.timeouts
        )
        async with http_client(settings.timeouts, max_connections=8) as http:
            client = StreamingClient(http, options, clock=time.perf_counter)
            runner = Runner(
                client,
                Workload.single(settings.prompt),
                TokenCounter(tokenizer),
                time.perf_counter,
                Progress(stderr or io.StringIO(), interactive=False),
            )
            return await runner.run(settings)

    return asyncio.run(go())


def test_figures_are_consistent_and_ttft_waits_for_content(fake: FakeOpenAIServer) -> None:
    fake.behaviour.first_content_delay_s = 0.05
    fake.behaviour.chunk_delay_s = 0.002
    settings = _settings(fake.url)
    [run] = _bench(settings)
    summary = summarize(run)
    assert [p.label for p in summary.points] == ["serial", "c=1", "c=3"]
    assert summary.token_source == "usage"
    for point, point_run in zip(summary.points, run.points):
        assert point.completed == point.requests and not point.errors
        # Tokens/s × time ≈ tokens, for the aggregate and for every request's decode rate.
        assert point.output_tokens == 9 * point.requests
        assert point.aggregate_tokens_per_s * point.duration_s == pytest.approx(point.output_tokens)
        for record in point_run.records:
            # The server sends an empty chunk at once and content only after 50 ms: TTFT counts content.
            assert record.ttft_s >= 0.05
            assert record.ttft_s <= record.latency_s
            assert record.decode_tokens_per_s * record.decode_s == pytest.approx(record.output_tokens - 1)
            assert record.text == " ".join(FIXED_WORDS)
        assert point.ttft_s.p50 <= point.latency_s.p50
    # Warm-up requests are not in any figure.
    assert len(run.warmup) == 1
    assert sum(p.requests for p in summary.points) == 3 + 6 + 6
    sent = fake.behaviour.seen[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["temperature"] == 0.0
    assert sent["body"]["stream"] is True and sent["body"]["stream_options"] == {"include_usage": True}
    assert sent["body"]["max_tokens"] == 9 and sent["body"]["messages"][0]["role"] == "user"


def test_token_counts_say_where_they_come_from(fake: FakeOpenAIServer, word_tokenizer_dir: Path) -> None:
    from generator.bench.tokens import load_tokenizer

    fake.behaviour.send_usage = False
    fake.behaviour.words_per_chunk = 2  # 9 words in 5 chunks: chunk counting undercounts
    settings = _settings(fake.url, api="completions", load_points=(), serial_requests=2)
    [by_chunks] = _bench(settings)
    [by_tokenizer] = _bench(settings, tokenizer=load_tokenizer(word_tokenizer_dir))
    chunks_summary, tokenizer_summary = summarize(by_chunks), summarize(by_tokenizer)
    assert chunks_summary.token_source == "chunks"
    assert "NOT counted" in chunks_summary.token_note
    assert chunks_summary.serial.output_tokens == 2 * 5
    assert tokenizer_summary.token_source == "tokenizer"
    assert tokenizer_summary.serial.output_tokens == 2 * 9
    assert tokenizer_summary.serial.tokens_per_chunk == pytest.approx(9 / 5)
    assert "1.80 tokens per streamed chunk: ITL is the gap between chunks" in stack_table(tokenizer_summary)
    assert fake.behaviour.seen[-1]["path"] == "/v1/completions"
    assert fake.behaviour.seen[-1]["body"]["prompt"] == settings.prompt


@pytest.mark.parametrize(
    ("change", "kind", "detail"),
    [
        (dict(http_status=503), "http_status", "HTTP 503"),
        (dict(close_after_chunks=3), "closed_mid_stream", "connection closed"),
        (dict(stall_after_chunks=2), "stall", "no data for 0.5 s"),
        (dict(error_event_after_chunks=1), "stream_error", "injected engine failure"),
        (dict(answer_json=True), "stream_error", "not an event stream"),
    ],
)
def test_errors_stalls_and_mid_stream_closes_are_reported(
    fake: FakeOpenAIServer, change: dict, kind: str, detail: str
) -> None:
    fake.behaviour = FakeBehaviour(**change)
    [run] = _bench(_settings(fake.url, warmup_requests=0, serial_requests=2, load_points=()))
    point = summarize(run).serial
    assert point.completed == 0 and point.failed == 2
    assert point.errors == {kind: 2}
    assert detail in point.error_examples[kind]
    assert point.output_tokens == 0 and point.aggregate_tokens_per_s == 0
    assert point.ttft_s.count == 0


def test_some_failures_are_counted_not_dropped(fake: FakeOpenAIServer) -> None:
    fake.behaviour.fail_every = 3
    settings = _settings(fake.url, warmup_requests=0, serial_requests=3, load_points=(LoadPoint("concurrency", 2),))
    [run] = _bench(settings)
    serial, c2 = summarize(run).points
    assert (serial.requests, serial.completed, serial.errors) == (3, 2, {"http_status": 1})
    assert (c2.requests, c2.completed, c2.errors) == (6, 4, {"http_status": 2})
    assert c2.output_tokens == 4 * 9
    assert c2.ttft_s.count == 4


def test_poisson_rate_sends_every_request(fake: FakeOpenAIServer) -> None:
    settings = _settings(fake.url, warmup_requests=0, serial_requests=1, load_points=(LoadPoint("rate", 50.0),))
    [run] = _bench(settings)
    rate = summarize(run).points[1]
    assert rate.label == "rate=50/s" and rate.completed == 6
    assert sorted(r.index for r in run.points[1].records) == list(range(6))


def test_api_key_is_sent_and_never_recorded(fake: FakeOpenAIServer) -> None:
    fake.behaviour.required_key = "sk-test-123"
    [run] = _bench(_settings(fake.url, api_key="sk-test-123", load_points=(), serial_requests=1))
    assert summarize(run).serial.completed == 1
    assert fake.behaviour.seen[-1]["auth"] == "Bearer sk-test-123"
    assert "sk-test-123" not in json.dumps(_settings(fake.url, api_key="sk-test-123").recorded())


def _argv(*endpoints: str, out: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    argv = [f"--endpoint={e}" for e in endpoints]
    argv += ["--model", "fake-model", "--concurrency", "1,2", "--requests", "4", "--serial-requests", "3",
             "--warmup", "1", "--max-tokens", "9", "--stall-timeout", "2", "--api-key-env", "TS_BENCH_TEST_KEY"]
    if out is not None:
        argv += ["--out", str(out)]
    return argv + list(extra)


def _run_command(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli_main(["bench", *argv])
    return code, stdout.getvalue(), stderr.getvalue()


def test_command_compares_two_stacks_and_writes_results(fake: FakeOpenAIServer, tmp_path: Path) -> None:
    fake.behaviour.chunk_delay_s = 0.001
    out = tmp_path / "results"
    code, stdout, stderr = _run_command(
        _argv(f"a={fake.url}", f"b={fake.url}/v1", out=out, extra=("--baseline", "a"))
    )
    assert code == 0, stdout + stderr
    assert stdout.startswith(f"a: {fake.url} model fake-model\n")
    assert f"b: {fake.url} model fake-model" in stdout
    assert "against baseline a" in stdout and "agg tok/s c=2" in stdout
    assert "a c=2: 4/4 requests" in stderr  # progress, on stderr
    document = json.loads((out / "results.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    assert [s["name"] for s in document["stacks"]] == ["a", "b"]
    assert document["client"]["httpx"] and document["settings"]["api_key"] is False
    assert len(document["deltas"]) == 3 + 2
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 3 and csv_lines[1].startswith("a,fake-model,serial,1,3,3,0,")
    for png in ("throughput.png", "ttft.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_command_exits_3_when_requests_fail(fake: FakeOpenAIServer) -> None:
    fake.behaviour.fail_every = 4
    code, stdout, stderr = _run_command(_argv(f"flaky={fake.url}"))
    assert code == EXIT_REQUESTS_FAILED
    assert "failed (http_status" in stdout and "HTTP 500" in stdout
    assert "measured request(s) failed" in stderr


def test_unreachable_message_names_the_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert cli_main(["bench", *_argv(f"gone=http://127.0.0.1:{port}")]) == 1
    err = capsys.readouterr().err
    assert f"endpoint gone (http://127.0.0.1:{port}): all 1 warm-up requests failed" in err
    assert "connect" in err and "Traceback" not in err
