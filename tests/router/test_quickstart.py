"""The router over the rendered quickstart stack: real tritonservers, the generator's engine models
(the router's default engine-direct routes) and the reference engine (tiny-chat: aggregated pool of
two; tiny-pd: prefill pool → decode pool), driven by the official openai client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes
from generator.router.config import Endpoint
from tests.support.paths import EXAMPLES
from tests.support.router import RunningRouter, engine_counter, start_router
from tests.support.stack import RunningStack

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@pytest.fixture(scope="module")
def router(running_quickstart: RunningStack) -> Iterator[RunningRouter]:
    out = running_quickstart.out_dir
    routes = out / ROUTES_PATH
    routes.parent.mkdir(parents=True, exist_ok=True)
    routes.write_bytes(
        local_routes(
            running_quickstart.stack, running_quickstart.launcher.endpoints(), RenderOptions(EXAMPLES, out)
        )
    )
    running = start_router(routes)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("model", ["tiny-chat", "tiny-pd"])
def test_openai_client_against_the_reference_engine(router: RunningRouter, model: str) -> None:
    c = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    assert {m.id for m in c.models.list()} == {"tiny-chat", "tiny-sync", "tiny-pd"}
    done = c.completions.create(model=model, prompt="The quick brown fox", max_tokens=8, seed=1)
    assert done.choices[0].text and done.usage.completion_tokens == 8 and done.usage.prompt_tokens > 0
    streamed = list(
        c.completions.create(
            model=model,
            prompt="The quick brown fox",
            max_tokens=8,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == done.choices[0].text
    assert streamed[-1].usage.completion_tokens == 8
    assert streamed[-1].usage.prompt_tokens == done.usage.prompt_tokens
    chat = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=6
    )
    assert chat.choices[0].message.content and chat.usage.completion_tokens <= 6
    chunks = list(
        c.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=6, stream=True
        )
    )
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == chat.choices[0].message.content
    )


def test_disaggregated_answer_equals_aggregated_for_the_same_engine_seed(router: RunningRouter) -> None:
    # tiny-chat (seed 0) and tiny-pd (seed 7) are different models; each must be self-consistent.
    c = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    first = c.completions.create(model="tiny-pd", prompt="once upon a time", max_tokens=6, temperature=0)
    again = c.completions.create(model="tiny-pd", prompt="once upon a time", max_tokens=6, temperature=0)
    assert first.choices[0].text == again.choices[0].text


def test_disconnect_cancels_the_engine_request(
    router: RunningRouter, running_quickstart: RunningStack
) -> None:
    """The router calls the decode pool's generation model directly (engine-direct, the default); a
    client that goes away mid-stream closes the upstream stream, Triton cancels the engine's request,
    and the reference engine counts it as cancelled (not completed). tiny-pd decodes
    at 200 tokens/s, so 500 tokens take long enough for the cancellation to arrive first."""
    replicas = [
        Endpoint(host=r.host, http=r.http_port, grpc=r.grpc_port, metrics=r.metrics_port)
        for r in running_quickstart.replicas("pd-decode")
    ]

    def count(outcome: str) -> float:
        return sum(engine_counter(e, outcome) for e in replicas)

    def settle(outcome: str, target: float) -> float:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and count(outcome) < target:
            time.sleep(0.2)
        return count(outcome)

    def quiet() -> tuple[float, float]:
        """Counters once requests of earlier tests on the shared stack have all been counted."""
        deadline, last = time.monotonic() + 30, (-1.0, -1.0)
        while time.monotonic() < deadline:
            now = (count("cancelled"), count("completed"))
            if now == last:
                return now
            last = now
            time.sleep(1.0)
        return last

    body = {"model": "tiny-pd", "prompt": "tell me a long story", "max_tokens": 500, "stream": True}
    cancelled, completed = quiet()
    with httpx.stream("POST", router.url + "/v1/completions", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        events = 0
        for line in reply.iter_lines():
            # The first event is the prefill phase's token; wait until the decode phase streams.
            events += line.startswith("data: {")
            if events == 5:
                break
    assert settle("cancelled", cancelled + 1) == cancelled + 1
    time.sleep(0.5)
    assert count("completed") == completed, "the abandoned request must not run to the end"


def test_a_model_served_without_streaming_still_answers_a_stream_request(router: RunningRouter) -> None:
    """tiny-sync is not decoupled: a client that asks for a stream gets SSE with the whole text in one
    event, the same text as the non-streamed answer, and usage."""
    c = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    whole = c.completions.create(model="tiny-sync", prompt="The quick brown fox", max_tokens=12, seed=3)
    chunks = list(
        c.completions.create(
            model="tiny-sync",
            prompt="The quick brown fox",
            max_tokens=12,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [chunk.choices[0].text for chunk in chunks if chunk.choices and chunk.choices[0].text]
    assert texts == [whole.choices[0].text]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
