"""A stream whose tritonserver dies midway goes on on the other replica (engine-direct path), on
real components: two tritonservers with the reference engine decoding at a paced 40 tokens/s, a
``tritonstack router`` process, a streaming client.

With greedy decoding the client must get exactly the text of an uninterrupted stream: the router
sends the other replica the prompt plus the tokens already streamed and asks for the rest.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes
from tests.support.paths import EXAMPLES
from tests.support.router import RunningRouter, start_router
from tests.support.stack import RunningStack, start_stack

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SPEC = f"""\
apiVersion: tritonstack/v1
name: migration
target:
  triton: "25.12"
models:
  - name: tiny-slow
    reference_engine:
      seed: 7
      decode_tokens_per_s: 40
    tokenizer_dir: {EXAMPLES / "tokenizers" / "tiny-chat"}
    max_batch_size: 8
    max_input_len: 1024
    max_output_len: 512
pools:
  - name: slow
    role: aggregated
    replicas: 2
    models: [tiny-slow]
"""
BODY = {"model": "tiny-slow", "prompt": "tell me a long story", "max_tokens": 60, "top_k": 1, "stream": True}


@pytest.fixture(scope="module")
def slow_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, RunningRouter]]:
    base = tmp_path_factory.mktemp("migration")
    spec = base / "migration.yaml"
    spec.write_text(SPEC)
    launcher = start_stack(spec, base / "build")
    stack = RunningStack(launcher.stack, base / "build", launcher)
    routes = stack.out_dir / ROUTES_PATH
    routes.parent.mkdir(parents=True, exist_ok=True)
    routes.write_bytes(local_routes(stack.stack, launcher.endpoints(), RenderOptions(base, stack.out_dir)))
    router = start_router(routes)
    try:
        yield stack, router
    finally:
        router.stop()
        launcher.stop()


def _active(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_trt_llm_request_metrics{") and 'request_type="active"' in line
    )


def _stream(url: str, on_event: int = 0, then=None) -> tuple[str, dict[str, int], list[str]]:
    """Text, usage and finish reasons of one streamed completion; ``then()`` after ``on_event`` events."""
    pieces, finish, usage, events = [], [], {}, 0
    body = {**BODY, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if event.get("usage"):
                usage = event["usage"]
            for choice in event["choices"]:
                pieces.append(choice["text"])
                if choice.get("finish_reason"):
                    finish.append(choice["finish_reason"])
            events += 1
            if events == on_event and then is not None:
                then()
    return "".join(pieces), usage, finish


def test_a_stream_whose_replica_is_killed_midway_ends_as_if_nothing_happened(
    slow_pool: tuple[RunningStack, RunningRouter],
) -> None:
    stack, router = slow_pool
    replicas = stack.replicas("slow")
    whole, usage, finish = _stream(router.url)
    assert usage["completion_tokens"] == 60 and finish == ["length"]

    killed: list[str] = []

    def kill_the_serving_replica() -> None:
        serving = [r for r in replicas if _active(r.metrics_port) > 0]
        assert len(serving) == 1, "one stream, one replica serving it"
        assert serving[0].process is not None
        serving[0].process.send_signal(signal.SIGKILL)
        killed.append(serving[0].name)

    started = time.monotonic()
    text, usage_after, finish_after = _stream(router.url, on_event=10, then=kill_the_serving_replica)
    assert killed, "the replica was killed mid-stream"
    assert text == whole
    assert usage_after == usage and finish_after == ["length"]
    assert time.monotonic() - started < 60
