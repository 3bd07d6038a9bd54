"""The router against hostile and careless clients (issue 12): every parameter range-checked before
Triton sees it, upstream errors classified (a bad request never ejects a replica), unsupported
fields and chat roles refused by name, OpenAI-shaped error bodies, logs that cannot be forged, the
disaggregated flow refusing before any prefill work when decode is down, TTFT from the request's
arrival, and ``/openapi.json`` checked by schemathesis.

Most tests run the ASGI app in-process over a recording stand-in for Triton; the poison-request
test runs the router process over two real tritonservers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from generator.commands.router import log_formatter
from generator.router.app import ARRIVAL_NS_KEY, RouterApp
from generator.router.config import Endpoint, parse_routes
from generator.router.upstream import GenerateCall, Response, UpstreamError
from tests.support.router import (
    RunningTriton,
    start_router,
    tritons,
    write_model,
    write_word_tokenizer,
)

AGG = Endpoint(host="10.0.0.1", http=8000, grpc=8001, metrics=8002)
PREFILL = Endpoint(host="10.0.0.2", http=8000, grpc=8001, metrics=8002)
DECODE = Endpoint(host="10.0.0.3", http=8000, grpc=8001, metrics=8002)


class RecordingUpstream:
    """A stand-in for Triton: records every generate call; a down host answers not ready."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, GenerateCall]] = []
        self.down: set[str] = set()
        self.fail: BaseException | None = None

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        self.calls.append((endpoint.host, call))
        if self.fail is not None:
            raise self.fail
        if call.parameters.get("request_type") == "context_only":
            yield Response(text=" w1", output_ids=[7], context_phase_params=b"{}")
            return
        for i in range(int(call.inputs.get("max_tokens", 1))):
            yield Response(text=f" w{i}")

    async def ready(self, endpoint: Endpoint, timeout: float) -> bool:
        return endpoint.host not in self.down

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str:
        return ""

    async def close(self) -> None:
        return None


def _routes(tokenizer: Path) -> dict[str, Any]:
    def model(serving: dict[str, Any]) -> dict[str, Any]:
        return {
            "tokenizer_dir": str(tokenizer),
            "max_input_len": 64,
            "max_output_len": 16,
            "serving": serving,
        }

    return {
        "apiVersion": "tritonstack/routes-v1",
        "router": {"health_interval_s": 30.0, "max_body_bytes": 65536},
        "models": {
            "m": model({"kind": "aggregated", "pool": "a", "triton_model": "m_ensemble"}),
            "pd": model(
                {
                    "kind": "disaggregated",
                    "prefill": {"pool": "p", "triton_model": "m_prefill"},
                    "decode": {"pool": "d", "triton_model": "m_decode"},
                }
            ),
        },
        "pools": {
            "a": {"role": "aggregated", "endpoints": [AGG.model_dump()]},
            "p": {"role": "prefill", "endpoints": [PREFILL.model_dump()]},
            "d": {"role": "decode", "endpoints": [DECODE.model_dump()]},
        },
    }


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_word_tokenizer(tmp_path_factory.mktemp("hostile") / "tokenizer")


class InProcess:
    def __init__(self, tokenizer: Path, down: set[str] = frozenset(), clock: Any = None) -> None:
        self.upstream = RecordingUpstream()
        self.upstream.down = set(down)
        kwargs = {"clock": clock} if clock is not None else {}
        self.app = RouterApp(parse_routes(yaml.safe_dump(_routes(tokenizer))), self.upstream, **kwargs)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.app.startup()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://router", timeout=10
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.app.shutdown()


def _post_all(tokenizer: Path, requests: list[tuple[str, Any]]) -> tuple[list[httpx.Response], int]:
    """POST each (path, json body or raw bytes); returns the answers and the upstream call count."""

    async def scenario() -> tuple[list[httpx.Response], int]:
        router = InProcess(tokenizer)
        async with router as c:
            answers = []
            for path, body in requests:
                if isinstance(body, bytes):
                    answers.append(
                        await c.post(path, content=body, headers={"content-type": "application/json"})
                    )
                else:
                    answers.append(await c.post(path, json=body))
        return answers, len(router.upstream.calls)

    return asyncio.run(scenario())


def _openai_error(reply: httpx.Response) -> dict[str, Any]:
    assert reply.headers["content-type"] == "application/json", reply.text
    body = reply.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# ------------------------------------------------------------------------------ parameter ranges

_RANGES = [
    ("top_k", 2**31),
    ("top_k", 9223372036854775808),
    ("top_k", -1),
    ("top_k", 1.5),
    ("top_k", True),
    ("max_tokens", 0),
    ("max_tokens", 17),  # the model's limit is 16
    ("max_tokens", 2**64),
    ("max_tokens", 4.5),
    ("temperature", 2.5),
    ("temperature", -0.1),
    ("temperature", "1"),
    ("top_p", 0),
    ("top_p", 1.01),
    ("frequency_penalty", 2.5),
    ("presence_penalty", -3),
    ("seed", -1),
    ("seed", 2**64),
    ("seed", 1.5),
    ("stop", ["a", "b", "c", "d", "e"]),
    ("stop", "x" * 10_000),
    ("stop", [""]),
    ("stream", "yes"),
    ("stream", 1),
    ("stream_options", {"include_usage": "true"}),
    ("user", 5),
    ("user", "u" * 10_000),
]


@pytest.mark.parametrize(("field", "value"), _RANGES, ids=[f"{f}={str(v)[:20]}" for f, v in _RANGES])
def test_out_of_range_parameters_are_400_naming_the_field_before_triton(
    tokenizer: Path, field: str, value: Any
) -> None:
    body = {"model": "m", "prompt": "w1 w2", "max_tokens": 4, field: value}
    chat = {"model": "m", "messages": [{"role": "user", "content": "w1"}], "max_tokens": 4, field: value}
    (completion, chat_reply), calls = _post_all(
        tokenizer, [("/v1/completions", body), ("/v1/chat/completions", chat)]
    )
    for reply in (completion, chat_reply):
        assert reply.status_code == 400, (field, value, reply.text)
        error = _openai_error(reply)
        assert error["type"] == "invalid_request_error" and error["param"] == field, error
        assert field in error["message"]
    assert calls == 0, "nothing out of range may reach Triton"


def test_values_at_the_edges_of_the_ranges_are_served(tokenizer: Path) -> None:
    body = {
        "model": "m",
        "prompt": "w1",
        "max_tokens": 16,
        "top_k": 2**31 - 1,
        "top_p": 1,
        "temperature": 2,
        "seed": 2**64 - 1,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "stop": ["a", "b", "c", "d"],
        "n": 1,
        "logprobs": None,
        "stream": None,
    }
    (reply,), calls = _post_all(tokenizer, [("/v1/completions", body)])
    assert reply.status_code == 200, reply.text
    assert calls == 1


# ------------------------------------------------------------------------------ unsupported fields

_UNSUPPORTED = [
    ("chat", "n", 2),
    ("chat", "tools", [{"type": "function", "function": {"name": "f"}}]),
    ("chat", "tool_choice", "auto"),
    ("chat", "functions", [{"name": "f"}]),
    ("chat", "function_call", "auto"),
    ("chat", "logprobs", True),
    ("chat", "top_logprobs", 2),
    ("chat", "response_format", {"type": "json_object"}),
    ("chat", "logit_bias", {"5": 10}),
    ("chat", "audio", {"voice": "alloy", "format": "wav"}),
    ("chat", "modalities", ["text", "audio"]),
    ("chat", "prediction", {"type": "content", "content": "x"}),
    ("completions", "n", 3),
    ("completions", "best_of", 2),
    ("completions", "echo", True),
    ("completions", "logprobs", 2),
    ("completions", "suffix", "end"),
    ("completions", "logit_bias", {"5": 10}),
]


@pytest.mark.parametrize(
    ("kind", "field", "value"), _UNSUPPORTED, ids=[f"{k}-{f}" for k, f, _ in _UNSUPPORTED]
)
def test_fields_the_router_cannot_honour_are_refused_by_name(
    tokenizer: Path, kind: str, field: str, value: Any
) -> None:
    if kind == "chat":
        path, body = "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "w1"}]}
    else:
        path, body = "/v1/completions", {"model": "m", "prompt": "w1"}
    (reply,), calls = _post_all(tokenizer, [(path, {**body, field: value})])
    assert reply.status_code == 400, reply.text
    error = _openai_error(reply)
    assert error["param"] == field and field in error["message"] and "not supported" in error["message"]
    assert calls == 0


def test_neutral_values_of_unsupported_fields_are_accepted(tokenizer: Path) -> None:
    chat = {
        "model": "m",
        "messages": [{"role": "user", "content": "w1"}],
        "max_tokens": 2,
        "tools": [],
        "tool_choice": "none",
        "logprobs": False,
        "response_format": {"type": "text"},
        "logit_bias": {},
        "modalities": ["text"],
        "store": False,
        "metadata": {"k": "v"},
    }
    (reply,), calls = _post_all(tokenizer, [("/v1/chat/completions", chat)])
    assert reply.status_code == 200, reply.text
    assert calls == 1


# ------------------------------------------------------------------------------ chat roles, templates


@pytest.mark.parametrize("role", ["tool", "developer", "function", "user\nERROR forged log line", "robot"])
def test_unsupported_chat_roles_are_400_naming_the_message(tokenizer: Path, role: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "w1"}, {"role": role, "content": "w2"}]}
    (reply,), calls = _post_all(tokenizer, [("/v1/chat/completions", body)])
    assert reply.status_code == 400, reply.text
    error = _openai_error(reply)
    assert error["param"] == "messages[1].role" and "role" in error["message"]
    assert calls == 0


def test_a_chat_template_that_raises_is_400_not_500(tokenizer: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict"
    strict.mkdir()
    for item in tokenizer.iterdir():
        (strict / item.name).write_bytes(item.read_bytes())
    (strict / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "w1"}, {"role": "user", "content": "w2"}],
    }
    (reply,), calls = _post_all(strict, [("/v1/chat/completions", body)])
    assert reply.status_code == 400, reply.text
    error = _openai_error(reply)
    assert "System role not supported" in error["message"] and error["param"] == "messages"
    assert calls == 0


# ------------------------------------------------------------------------------ error bodies


def test_every_error_the_router_sends_is_openai_shaped(tokenizer: Path) -> None:
    async def scenario() -> dict[str, httpx.Response]:
        router = InProcess(tokenizer)
        async with router as c:
            out = {
                "404": await c.get("/v2/repository/index"),
                "405": await c.get("/v1/completions"),
                "405-get-path": await c.post("/health"),
                "413": await c.post("/v1/completions", json={"model": "m", "prompt": "w1 " * 40_000}),
                "404-model": await c.post("/v1/completions", json={"model": "nope", "prompt": "w1"}),
            }
            router.upstream.fail = KeyError("boom\nforged")  # a bug anywhere below the app
            out["500"] = await c.post("/v1/completions", json={"model": "m", "prompt": "w1"})
            out["500-stream"] = await c.post(
                "/v1/completions", json={"model": "m", "prompt": "w1", "stream": True}
            )
            router.upstream.fail = None
            router.upstream.down = {AGG.host}
            await router.app.monitor.check_health()
            out["503"] = await c.post("/v1/completions", json={"model": "m", "prompt": "w1"})
        return out

    replies = asyncio.run(scenario())
    expected = {"404": 404, "405": 405, "405-get-path": 405, "413": 413, "404-model": 404, "500": 500}
    for name, status in expected.items():
        assert replies[name].status_code == status, (name, replies[name].text)
        _openai_error(replies[name])
    assert replies["405"].headers["allow"] == "POST"
    assert replies["405-get-path"].headers["allow"] == "GET, HEAD"
    assert "boom" not in replies["500"].text and "Traceback" not in replies["500"].text
    assert replies["500-stream"].status_code == 500  # nothing was streamed yet: a plain error answer
    _openai_error(replies["500-stream"])
    assert replies["503"].status_code == 503 and replies["503"].headers["retry-after"]
    _openai_error(replies["503"])


# ------------------------------------------------------------------------------ disaggregated


def test_disaggregated_flow_refuses_before_prefill_when_decode_is_down(tokenizer: Path) -> None:
    async def scenario() -> tuple[httpx.Response, list[str]]:
        router = InProcess(tokenizer, down={DECODE.host})
        async with router as c:
            reply = await c.post("/v1/completions", json={"model": "pd", "prompt": "w1", "max_tokens": 4})
        return reply, [host for host, _ in router.upstream.calls]

    reply, hosts = asyncio.run(scenario())
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"]
    error = _openai_error(reply)
    assert "decode" in error["message"]
    assert hosts == [], "no prefill work while the decode pool has no ready replica"


# ------------------------------------------------------------------------------ TTFT


def test_ttft_counts_from_the_arrival_the_server_stamped(tokenizer: Path) -> None:
    now = [100.0]

    async def scenario() -> float:
        router = InProcess(tokenizer, clock=lambda: now[0])
        await router.app.startup()
        try:
            body = json.dumps({"model": "m", "prompt": "w1", "max_tokens": 2}).encode()
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/v1/completions",
                "headers": [(b"content-type", b"application/json")],
                ARRIVAL_NS_KEY: 97_000_000_000,  # the head arrived 3 s before the app saw it
            }
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop(0)
                await asyncio.Event().wait()
                return {}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await router.app(scope, receive, send)
            assert sent[0]["status"] == 200
            value = router.app.metrics.registry.get_sample_value(
                "tritonstack_router_time_to_first_token_seconds_sum", {"model": "m"}
            )
            assert value is not None
            return value
        finally:
            await router.app.shutdown()

    assert asyncio.run(scenario()) == pytest.approx(3.0)


# ------------------------------------------------------------------------------ logs


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("tritonstack.router", logging.WARNING, __file__, 1, message, args, None)


def test_text_logs_escape_control_characters() -> None:
    line = log_formatter("text").format(_record("bad role %s", "user\nERROR forged\r\x1b[31m"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "user\\nERROR forged\\r\\x1b[31m" in line


def test_text_logs_indent_traceback_lines() -> None:
    try:
        raise ValueError("first\nERROR forged")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    lines = log_formatter("text").format(record).splitlines()
    assert all(line.startswith("  ") for line in lines[1:]), lines


def test_json_lines_logs_are_one_object_per_line() -> None:
    line = log_formatter("json").format(_record("model %s", 'm\n{"forged": 1}'))
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == 'model m\n{"forged": 1}'
    assert document["level"] == "warning" and document["logger"] == "tritonstack.router"
    assert "time" in document


# ------------------------------------------------------------------------------ real tritonservers

POISON_WORD = "w63"
# The test double with a top_k input (INT32 as in the ensemble) that refuses, as the reference
# engine does, a negative top_k, and refuses prompts holding POISON_WORD: a request Triton rejects.
_CHECKS = (
    "        tk = self._get(request, 'top_k')\n"
    "        if tk is not None and int(tk[0]) < 0:\n"
    "            raise ValueError(f'sampling settings out of range: runtime_top_k={int(tk[0])}')\n"
    "        if b'" + POISON_WORD + "' in bytes(self._get(request, 'text_input')[0]):\n"
    "            raise ValueError('invalid prompt: " + POISON_WORD + " is not allowed')\n"
)


def _write_strict_model(repo: Path) -> None:
    write_model(repo, "m_ensemble", "aggregated", instances=2)
    config = repo / "m_ensemble" / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            "input [\n", 'input [\n  { name: "top_k" data_type: TYPE_INT32 dims: [ 1 ] optional: true },\n'
        )
    )
    model = repo / "m_ensemble" / "1" / "model.py"
    anchor = '        params = json.loads(request.parameters() or "{}")\n'
    model.write_text(model.read_text().replace(anchor, _CHECKS + anchor))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[RunningTriton]]]:
    base = tmp_path_factory.mktemp("poison")
    repos = [base / "r1", base / "r2"]
    for repo in repos:
        _write_strict_model(repo)
    with tritons(repos, base) as servers:
        yield base, servers


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_poison_requests_are_the_clients_400_and_never_take_the_pool_out(
    replicas: tuple[Path, list[RunningTriton]], tokenizer: Path, transport: str
) -> None:
    base, servers = replicas
    routes = _routes(tokenizer)
    routes["router"].update(
        upstream=transport, eject_after_failures=1, ejection_s=30.0, health_interval_s=0.3, max_retries=2
    )
    routes["pools"]["a"]["endpoints"] = [s.endpoint.model_dump() for s in servers]
    path = base / f"routes-{transport}.yaml"
    path.write_text(yaml.safe_dump(routes))
    router = start_router(path)
    try:
        c = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        for _ in range(6):
            with pytest.raises(openai.BadRequestError) as refused:
                c.completions.create(model="m", prompt=f"w1 {POISON_WORD}", max_tokens=2)
            assert refused.value.status_code == 400 and "not allowed" in refused.value.message
            with pytest.raises(openai.BadRequestError) as ranged:
                c.completions.create(model="m", prompt="w1", max_tokens=2, extra_body={"top_k": 2**63})
            assert ranged.value.body["param"] == "top_k"
        for _ in range(6):
            assert c.completions.create(model="m", prompt="w1 w2", max_tokens=2).choices[0].text
        assert _metric(router.url, "tritonstack_router_ejections_total") == 0
        assert _metric(router.url, "tritonstack_router_retries_total") == 0
        assert _metric(router.url, "tritonstack_router_replica_available") == 2
    finally:
        router.stop()


@pytest.mark.triton
@pytest.mark.slow
def test_unsupported_roles_through_the_openai_client_are_not_retried(
    replicas: tuple[Path, list[RunningTriton]], tokenizer: Path
) -> None:
    base, servers = replicas
    routes = _routes(tokenizer)
    routes["pools"]["a"]["endpoints"] = [s.endpoint.model_dump() for s in servers]
    path = base / "routes-roles.yaml"
    path.write_text(yaml.safe_dump(routes))
    router = start_router(path)
    try:
        c = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=2, timeout=30)
        for role in ("tool", "developer"):
            message: dict[str, Any] = {"role": role, "content": "w1"}
            if role == "tool":
                message["tool_call_id"] = "call_1"
            with pytest.raises(openai.BadRequestError) as refused:
                c.chat.completions.create(model="m", messages=[message], max_tokens=2)  # type: ignore[list-item]
            assert refused.value.body["param"] == "messages[0].role"
        assert _metric(router.url, "tritonstack_router_requests_total", status="400") == 2
        assert _metric(router.url, "tritonstack_router_requests_total", status="500") == 0
    finally:
        router.stop()


# ------------------------------------------------------------------------------ OpenAPI + schemathesis


def test_openapi_document_is_served_and_valid(tokenizer: Path) -> None:
    async def scenario() -> httpx.Response:
        async with InProcess(tokenizer) as c:
            return await c.get("/openapi.json")

    reply = asyncio.run(scenario())
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    document = reply.json()
    from jsonschema.validators import Draft202012Validator

    assert document["openapi"].startswith("3.1")
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/ready"} <= set(
        document["paths"]
    )
    completions = document["paths"]["/v1/completions"]["post"]
    assert {"200", "400", "401", "404", "413", "429", "500", "503", "504"} <= set(completions["responses"])
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_upstream_error_tree_is_exported() -> None:
    from generator.router.upstream import UpstreamRejected

    assert issubclass(UpstreamRejected, UpstreamError)


@pytest.fixture(scope="module")
def router_schema(tokenizer: Path) -> Any:
    import schemathesis

    app = RouterApp(parse_routes(yaml.safe_dump(_routes(tokenizer))), RecordingUpstream())
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _too_long_for_the_model(response: Any) -> bool:
    if response.status_code != 400:
        return False
    try:
        return response.json()["error"]["code"] == "context_length_exceeded"
    except (ValueError, KeyError, TypeError):
        return False


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_api_keeps_to_its_openapi_document(router_schema: Any, mode: str) -> None:
    """Schemathesis' generated requests, valid (positive) and invalid (negative), against the
    in-process app: no 500, and no status, header or body the document does not describe.
    (Driven through hypothesis directly: schemathesis' pytest plugin does not load under this pytest.)"""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    for result in router_schema.get_all_operations():
        operation = result.ok()
        if mode == "negative" and operation.method.upper() != "POST":
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call()
            if _too_long_for_the_model(response):
                # Schema-valid, and still over the model's input limit: a limit of the model the
                # document cannot state (tokens, not characters); the answer must still match it.
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            else:
                case.validate_response(response)

        check()


def test_a_prompt_far_over_the_limit_is_refused_by_its_size_before_tokenizing(tokenizer: Path) -> None:
    route_limit = _routes(tokenizer)["models"]["m"]["max_input_len"]
    prompt = "word " * (route_limit * 16)  # 5 bytes a word: far over max_input_len × 16 bytes
    (reply,), calls = _post_all(
        tokenizer, [("/v1/completions", {"model": "m", "prompt": prompt, "max_tokens": 4})]
    )
    assert reply.status_code == 400
    error = _openai_error(reply)
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "checked before tokenizing" in error["message"]
    assert calls == 0
