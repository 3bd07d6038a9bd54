"""The router against real tritonserver processes (CPU build) serving the ensemble contract.

Three servers: two replicas of an aggregated pool (``agg`` and the slow ``slow``) and one server
holding a prefill and a decode model (``pd``, disaggregated). The router runs as a real process
(``python -m generator.cli router``) with API keys; the policy tests build the ASGI app
in-process over the same servers. Tests run in file order; the last ones kill a replica and drain
the router.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from generator.router.app import RouterApp
from generator.router.config import parse_routes
from generator.router.upstream import GrpcUpstream
from tests.support.router import (
    RunningRouter,
    RunningTriton,
    engine_counter,
    start_router,
    start_triton,
    tritons,
    write_model,
    write_word_tokenizer,
)

pytestmark = [pytest.mark.triton, pytest.mark.slow]

KEY = "test-key-1"
HEADERS = {"authorization": f"Bearer {KEY}"}


class Stack:
    def __init__(self, base: Path, servers: list[RunningTriton], tokenizer: Path) -> None:
        self.base, self.servers, self.tokenizer = base, servers, tokenizer
        self.a1, self.a2, self.pd = servers
        self.routes_path = base / "routes.yaml"
        self.router: RunningRouter | None = None

    def routes(
        self, policy: str = "least_inflight", extra_models: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        def ep(s: RunningTriton) -> dict[str, Any]:
            return s.endpoint.model_dump()

        def model(serving: dict[str, Any]) -> dict[str, Any]:
            return {
                "tokenizer_dir": str(self.tokenizer),
                "max_input_len": 32,
                "max_output_len": 16,
                "serving": serving,
            }

        return {
            "apiVersion": "tritonstack/routes-v1",
            "router": {
                "policy": policy,
                "api_keys_env": "ROUTER_TEST_KEYS",
                "max_body_bytes": 4096,
                "token_timeout_s": 5.0,
                "first_token_timeout_s": 10.0,
                "eject_after_failures": 2,
                "ejection_s": 1.0,
                "health_interval_s": 0.3,
                "max_retries": 2,
                "drain_timeout_s": 20.0,
            },
            "models": {
                "agg": model({"kind": "aggregated", "pool": "a", "triton_model": "m_ensemble"}),
                "slow": model({"kind": "aggregated", "pool": "a", "triton_model": "m_slow"}),
                "pd": model(
                    {
                        "kind": "disaggregated",
                        "prefill": {"pool": "p", "triton_model": "m_prefill"},
                        "decode": {"pool": "d", "triton_model": "m_decode"},
                    }
                ),
                **(extra_models or {}),
            },
            "pools": {
                "a": {"role": "aggregated", "endpoints": [ep(self.a1), ep(self.a2)]},
                "p": {"role": "prefill", "endpoints": [ep(self.pd)]},
                "d": {"role": "decode", "endpoints": [ep(self.pd)]},
            },
        }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("router")
    tokenizer = write_word_tokenizer(base / "tokenizer")
    repos = []
    for name in ("a1", "a2"):
        repo = base / name
        write_model(repo, "m_ensemble", "aggregated", delay=0.01, instances=2)
        write_model(repo, "m_slow", "aggregated", delay=0.2, instances=2)
        repos.append(repo)
    write_model(base / "pd", "m_prefill", "prefill", instances=2)
    write_model(base / "pd", "m_decode", "decode", delay=0.01, instances=2)
    repos.append(base / "pd")
    with tritons(repos, base) as servers:
        s = Stack(base, servers, tokenizer)
        s.routes_path.write_text(yaml.safe_dump(s.routes()))
        s.router = start_router(s.routes_path, {"ROUTER_TEST_KEYS": f"other,{KEY}"})
        try:
            yield s
        finally:
            s.router.stop()
            for server in servers:  # a restarted replica is a new process: stop it too
                server.stop()


def client(stack: Stack) -> openai.OpenAI:
    assert stack.router is not None
    return openai.OpenAI(base_url=stack.router.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def router_metric(stack: Stack, name: str, **labels: str) -> float:
    assert stack.router is not None
    return metric_at(stack.router.url, name, **labels)


def metric_at(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text  # a new connection each time
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def triton_successes(server: RunningTriton, model: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.endpoint.metrics}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and f'model="{model}"' in line
    )


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------------------------------ API


@pytest.mark.parametrize("model", ["agg", "pd"])
def test_openai_client_chat_and_completions_streaming_and_not(stack: Stack, model: str) -> None:
    c = client(stack)
    listed = {m.id for m in c.models.list()}
    assert {"agg", "slow", "pd"} <= listed

    done = c.completions.create(model=model, prompt="w1 w2 w3", max_tokens=6)
    text = done.choices[0].text
    assert len(text.split()) == 6 and done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (3, 6, 9)

    streamed = list(c.completions.create(model=model, prompt="w1 w2 w3", max_tokens=6, stream=True))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == text

    chat = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "w4 w5"}], max_tokens=4
    )
    assert chat.choices[0].message.role == "assistant" and len(chat.choices[0].message.content.split()) == 4
    assert chat.usage.completion_tokens == 4

    chunks = list(
        c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "w4 w5"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == chat.choices[0].message.content
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"


def test_same_answer_aggregated_and_disaggregated_and_stop(stack: Stack) -> None:
    c = client(stack)
    agg = c.completions.create(model="agg", prompt="w9", max_tokens=8).choices[0].text
    pd = c.completions.create(model="pd", prompt="w9", max_tokens=8).choices[0].text
    assert agg == pd
    stop_word = agg.split()[2]
    stopped = c.completions.create(model="agg", prompt="w9", max_tokens=8, stop=[stop_word])
    # OpenAI semantics: the text ends before the stop string (the router trims it).
    assert (
        stopped.choices[0].finish_reason == "stop" and stopped.choices[0].text == agg[: agg.find(stop_word)]
    )


def test_prefill_that_finishes_the_request_answers_without_decode(stack: Stack) -> None:
    before = triton_successes(stack.pd, "m_decode")
    early = router_metric(stack, "tritonstack_router_prefill_finished_requests_total", model="pd")
    out = client(stack).completions.create(model="pd", prompt="w1", max_tokens=1)
    assert len(out.choices[0].text.split()) == 1 and out.usage.completion_tokens == 1
    assert router_metric(stack, "tritonstack_router_prefill_finished_requests_total", model="pd") == early + 1
    assert triton_successes(stack.pd, "m_decode") == before


def test_request_id_is_echoed_and_health_ready_metrics(stack: Stack) -> None:
    assert stack.router is not None
    url = stack.router.url
    reply = httpx.post(
        url + "/v1/completions",
        headers={**HEADERS, "x-request-id": "abc-123"},
        json={"model": "agg", "prompt": "w1", "max_tokens": 2},
        timeout=30,
    )
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "abc-123"
    assert reply.json()["id"] == "cmpl-abc-123"
    assert client(stack).completions.create(model="pd", prompt="w1", max_tokens=2).choices[0].text
    assert httpx.get(url + "/health").status_code == 200
    ready = httpx.get(url + "/ready").json()
    assert ready["ready"] and ready["models"] == {"agg": True, "slow": True, "pd": True}
    assert router_metric(stack, "tritonstack_router_requests_total", model="agg", status="200") >= 1
    assert router_metric(stack, "tritonstack_router_time_to_first_token_seconds_count", model="agg") >= 1
    assert router_metric(stack, "tritonstack_router_disaggregated_phase_seconds_count", phase="prefill") >= 1


def test_bad_input_is_4xx_and_router_keeps_serving(stack: Stack) -> None:
    assert stack.router is not None
    url = stack.router.url
    long_prompt = " ".join(["w1"] * 40)  # 40 tokens > max_input_len 32
    cases = [
        ("/v1/completions", HEADERS, b"{oops", 400),
        ("/v1/completions", HEADERS, json.dumps({"model": "agg", "prompt": ["a", "b"]}).encode(), 400),
        (
            "/v1/completions",
            HEADERS,
            json.dumps({"model": "agg", "prompt": "w1", "max_tokens": "2"}).encode(),
            400,
        ),
        ("/v1/chat/completions", HEADERS, json.dumps({"model": "agg", "messages": "hi"}).encode(), 400),
        ("/v1/completions", HEADERS, json.dumps({"model": "nope", "prompt": "w1"}).encode(), 404),
        ("/v1/completions", HEADERS, json.dumps({"model": "agg", "prompt": "w1 " * 3000}).encode(), 413),
        ("/v1/completions", HEADERS, json.dumps({"model": "agg", "prompt": long_prompt}).encode(), 400),
        (
            "/v1/completions",
            HEADERS,
            json.dumps({"model": "agg", "prompt": "w1", "max_tokens": 99}).encode(),
            400,
        ),
        ("/v1/completions", {}, json.dumps({"model": "agg", "prompt": "w1"}).encode(), 401),
        (
            "/v1/completions",
            {"authorization": "Bearer wrong"},
            json.dumps({"model": "agg", "prompt": "w1"}).encode(),
            401,
        ),
    ]
    for path, headers, body, status in cases:
        reply = httpx.post(
            url + path, headers={**headers, "content-type": "application/json"}, content=body, timeout=30
        )
        assert reply.status_code == status, (body[:60], reply.text)
        error = reply.json()["error"]
        assert error["message"] and error["type"]
    assert (
        httpx.get(url + "/v2/repository/index", timeout=10).status_code == 404
    )  # Triton's API is not exposed
    assert httpx.post(url + "/v2/repository/models/m_ensemble/unload", timeout=10).status_code == 404
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert client(stack).completions.create(model="agg", prompt="w1", max_tokens=2).choices[0].text
    assert router_metric(stack, "tritonstack_router_requests_total", status="500") == 0
    assert router_metric(stack, "tritonstack_router_requests_total", status="502") == 0


def test_client_disconnect_cancels_upstream(stack: Stack) -> None:
    assert stack.router is not None
    before = engine_counter(stack.a1.endpoint, "cancelled") + engine_counter(stack.a2.endpoint, "cancelled")
    body = {"model": "slow", "prompt": "w3", "max_tokens": 16, "stream": True}
    with httpx.stream(
        "POST", stack.router.url + "/v1/completions", headers=HEADERS, json=body, timeout=30
    ) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                break  # one token in, then hang up
    assert wait_for(
        lambda: (
            engine_counter(stack.a1.endpoint, "cancelled") + engine_counter(stack.a2.endpoint, "cancelled")
            == before + 1
        )
    )
    assert wait_for(
        lambda: router_metric(stack, "tritonstack_router_client_disconnects_total", model="slow") >= 1
    )


# ------------------------------------------------------------------------------------------ policies


async def _in_process(
    stack: Stack, policy: str, requests: list[dict[str, Any]], concurrent: bool
) -> list[int]:
    routes = parse_routes(yaml.safe_dump(stack.routes(policy)))
    app = RouterApp(routes, GrpcUpstream(2.0), environ={"ROUTER_TEST_KEYS": KEY})
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://router", headers=HEADERS, timeout=60
        ) as c:

            async def one(req: dict[str, Any]) -> int:
                headers = req.pop("_headers", {})
                return (await c.post("/v1/completions", json=req, headers=headers)).status_code

            if concurrent:
                return list(await asyncio.gather(*(one(dict(r)) for r in requests)))
            return [await one(dict(r)) for r in requests]
    finally:
        await app.shutdown()


def _split(stack: Stack, model: str, run) -> tuple[float, float]:
    a1, a2 = triton_successes(stack.a1, model), triton_successes(stack.a2, model)
    statuses = run()
    assert set(statuses) == {200}

    def split() -> tuple[float, float]:
        return triton_successes(stack.a1, model) - a1, triton_successes(stack.a2, model) - a2

    # Triton counts a decoupled request's success when its final flag is processed, which can come
    # just after the client saw the end of the stream: wait until every request is counted.
    wait_for(lambda: sum(split()) >= len(statuses))
    return split()


def test_round_robin_alternates(stack: Stack) -> None:
    reqs = [{"model": "agg", "prompt": f"w{i}", "max_tokens": 1} for i in range(8)]
    assert _split(
        stack, "m_ensemble", lambda: asyncio.run(_in_process(stack, "round_robin", reqs, False))
    ) == (4, 4)


def test_least_inflight_spreads_concurrent_requests(stack: Stack) -> None:
    reqs = [{"model": "slow", "prompt": f"w{i}", "max_tokens": 2} for i in range(6)]
    assert _split(stack, "m_slow", lambda: asyncio.run(_in_process(stack, "least_inflight", reqs, True))) == (
        3,
        3,
    )


def test_session_affinity_keeps_a_session_on_one_replica(stack: Stack) -> None:
    reqs = [
        {"model": "agg", "prompt": f"w{i}", "max_tokens": 1, "_headers": {"x-session-id": "alice"}}
        for i in range(6)
    ]
    split = _split(
        stack, "m_ensemble", lambda: asyncio.run(_in_process(stack, "session_affinity", reqs, False))
    )
    assert sorted(split) == [0, 6]
    by_user = [{"model": "agg", "prompt": f"w{i}", "max_tokens": 1, "user": "bob"} for i in range(6)]
    split = _split(
        stack, "m_ensemble", lambda: asyncio.run(_in_process(stack, "session_affinity", by_user, False))
    )
    assert sorted(split) == [0, 6]


def test_prefix_aware_sends_a_shared_prefix_to_one_replica(stack: Stack) -> None:
    system = " ".join(f"w{i}" for i in range(20))  # > one 16-token block
    reqs = [{"model": "agg", "prompt": f"{system} w{40 + i}", "max_tokens": 1} for i in range(6)]
    split = _split(stack, "m_ensemble", lambda: asyncio.run(_in_process(stack, "prefix_aware", reqs, False)))
    assert sorted(split) == [0, 6]


def test_admission_control_answers_429_with_retry_after(stack: Stack) -> None:
    routes = stack.routes()
    routes["router"].update(max_inflight_per_replica=1, max_queue=0)

    async def scenario() -> list[httpx.Response]:
        app = RouterApp(
            parse_routes(yaml.safe_dump(routes)), GrpcUpstream(2.0), environ={"ROUTER_TEST_KEYS": KEY}
        )
        await app.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://r", headers=HEADERS, timeout=60
            ) as c:
                body = {"model": "slow", "prompt": "w1", "max_tokens": 2}
                return list(await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(3))))
        finally:
            await app.shutdown()

    replies = asyncio.run(scenario())
    assert sorted(r.status_code for r in replies) == [200, 200, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"]["type"] == "rate_limit_error"


def test_disaggregated_phase_failures_are_errors_not_hangs(stack: Stack) -> None:
    routes = stack.routes()
    dead = {"host": "127.0.0.1", "http": 9, "grpc": 9, "metrics": 9}  # discard port: nothing listens
    routes["router"].update(prefill_timeout_s=0.1, health_interval_s=30.0)
    routes["pools"]["p-dead"] = {"role": "prefill", "endpoints": [dead]}
    routes["pools"]["p-slow"] = {"role": "prefill", "endpoints": [stack.a1.endpoint.model_dump()]}
    model = routes["models"]["pd"]
    routes["models"]["pd-dead"] = {
        **model,
        "serving": {**model["serving"], "prefill": {"pool": "p-dead", "triton_model": "m_prefill"}},
    }
    routes["models"]["pd-slow"] = {
        **model,
        "serving": {**model["serving"], "prefill": {"pool": "p-slow", "triton_model": "m_slow"}},
    }
    cancelled = engine_counter(stack.a1.endpoint, "cancelled")

    async def scenario() -> list[httpx.Response]:
        app = RouterApp(
            parse_routes(yaml.safe_dump(routes)), GrpcUpstream(2.0), environ={"ROUTER_TEST_KEYS": KEY}
        )
        await app.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://r", headers=HEADERS, timeout=30
            ) as c:
                return [
                    await c.post("/v1/completions", json={"model": m, "prompt": "w1", "max_tokens": 4})
                    for m in ("pd-dead", "pd-slow")
                ]
        finally:
            await app.shutdown()

    no_prefill, slow_prefill = asyncio.run(scenario())
    assert no_prefill.status_code == 503 and "no ready replica" in no_prefill.json()["error"]["message"]
    assert slow_prefill.status_code == 504 and "prefill" in slow_prefill.json()["error"]["message"]
    # The timed-out prefill does not keep running upstream.
    assert wait_for(lambda: engine_counter(stack.a1.endpoint, "cancelled") == cancelled + 1)


# ------------------------------------------------------------------------------------------ operations


def test_sighup_reloads_config_without_dropping_a_stream(stack: Stack) -> None:
    assert stack.router is not None
    extra = {"agg-alias": stack.routes()["models"]["agg"]}
    body = {"model": "slow", "prompt": "w5", "max_tokens": 6, "stream": True}
    with httpx.stream(
        "POST", stack.router.url + "/v1/completions", headers=HEADERS, json=body, timeout=30
    ) as reply:
        lines = reply.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        stack.routes_path.write_text(yaml.safe_dump(stack.routes(extra_models=extra)))
        stack.router.process.send_signal(signal.SIGHUP)
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest)
    assert wait_for(lambda: "agg-alias" in {m.id for m in client(stack).models.list()})
    assert client(stack).completions.create(model="agg-alias", prompt="w1", max_tokens=2).choices[0].text


async def _stream_many(url: str, total: int, concurrency: int, after: int, on_after) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)
    finished = 0
    results: list[dict[str, Any]] = []

    async def one(i: int, c: httpx.AsyncClient) -> None:
        nonlocal finished
        async with gate:
            body = {"model": "agg", "prompt": f"w{i % 50}", "max_tokens": 8, "stream": True}
            result: dict[str, Any] = {"status": None, "tokens": 0, "error": False, "done": False}
            async with c.stream("POST", url + "/v1/completions", json=body, headers=HEADERS) as reply:
                result["status"] = reply.status_code
                async for line in reply.aiter_lines():
                    if line == "data: [DONE]":
                        result["done"] = True
                    elif line.startswith("data: "):
                        event = json.loads(line[6:])
                        if "error" in event:
                            result["error"] = True
                        elif event["choices"] and event["choices"][0]["text"]:
                            result["tokens"] += 1
            results.append(result)
            finished += 1
            if finished == after:
                on_after()

    # The client timeout is the "never hangs" bound: far above the router's 5 s token deadline.
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as c:
        await asyncio.gather(*(one(i, c) for i in range(total)))
    return results


def test_sigkill_replica_under_load_then_readmit(stack: Stack) -> None:
    assert stack.router is not None
    killed = stack.a2
    replica = f"127.0.0.1:{killed.endpoint.grpc}"
    try:
        results = asyncio.run(
            _stream_many(stack.router.url, 200, 32, 30, lambda: killed.stop(signal.SIGKILL))
        )
        assert len(results) == 200
        assert all(r["status"] == 200 and r["done"] for r in results), [r for r in results if not r["done"]][
            :3
        ]
        complete = [r for r in results if not r["error"]]
        cut = [r for r in results if r["error"]]
        assert all(r["tokens"] == 8 for r in complete), [r for r in complete if r["tokens"] != 8][:3]
        # Only streams already running on it are cut, and only after their first token (a stream can
        # also lose its end: all 8 tokens out, then the final response and the stream's end never come).
        assert all(0 < r["tokens"] <= 8 for r in cut) and len(cut) < 32, cut
        assert router_metric(stack, "tritonstack_router_replica_available", replica=replica, pool="a") == 0
        assert router_metric(stack, "tritonstack_router_ejections_total", pool="a") >= 1
    finally:  # the tests after this one expect both replicas back, whatever happened here
        killed.stop(signal.SIGKILL)  # no-op when the load above already killed it
        stack.servers[1] = stack.a2 = start_triton(killed.repo, killed.log, killed.endpoint)
    assert wait_for(
        lambda: router_metric(stack, "tritonstack_router_replica_available", replica=replica, pool="a") == 1
    )
    reqs = [{"model": "agg", "prompt": f"w{i}", "max_tokens": 1} for i in range(4)]
    assert _split(
        stack, "m_ensemble", lambda: asyncio.run(_in_process(stack, "round_robin", reqs, False))
    ) == (2, 2)


def test_workers_share_one_port(stack: Stack) -> None:
    router = start_router(stack.routes_path, {"ROUTER_TEST_KEYS": KEY}, "--workers", "2")
    try:
        c = openai.OpenAI(base_url=router.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        assert wait_for(lambda: httpx.get(router.url + "/ready", timeout=5).status_code == 200)
        texts = {
            c.completions.create(model="agg", prompt="w2", max_tokens=3).choices[0].text for _ in range(6)
        }
        assert len(texts) == 1 and len(texts.pop().split()) == 3
        # Whichever worker the kernel hands a scrape to answers for both.
        for _ in range(8):
            assert metric_at(router.url, "tritonstack_router_requests_total", model="agg", status="200") == 6
            assert metric_at(router.url, "tritonstack_router_generated_tokens_total", model="agg") == 18
            assert metric_at(router.url, "tritonstack_router_replica_available", pool="a") == 2
            assert metric_at(router.url, "tritonstack_router_replica_inflight_requests", pool="a") == 0
    finally:
        assert router.stop() == 0


def test_sigterm_drains_in_flight_streams(stack: Stack) -> None:
    assert stack.router is not None
    body = {"model": "slow", "prompt": "w7", "max_tokens": 6, "stream": True}
    with httpx.stream(
        "POST", stack.router.url + "/v1/completions", headers=HEADERS, json=body, timeout=30
    ) as reply:
        lines = reply.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        stack.router.process.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest)
    assert stack.router.process.wait(timeout=30) == 0
