"""The router as a bare ASGI application (``generator/router/server.py`` serves it).

A bare ASGI callable, not a framework router: per-request framework cost is what caps one Python
event loop (a raw ASGI app relays about twice the requests of Starlette per core), and at
concurrency 1 it is most of the latency the router adds. Everything it needs comes in as arguments:
the routes, the upstream client, the clocks and the tokenizer loader; resources start in the ASGI
lifespan, not at import.

Served paths: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``,
``GET /health`` (live), ``GET /ready`` (every model has a ready replica in each pool it needs),
``GET /metrics``, ``GET /openapi.json`` (this API, described by ``openapi``). Anything else is
404: Triton's own endpoints (model control, shared memory, logging) are never reachable through the
router.

Every error answer is OpenAI's shape, ``{"error": {message, type, param, code}}``, 500 included: an
unexpected exception is logged with its request id and answered without its text or traceback.

Latency figures start when the request head arrived: the server stamps ``scope[ARRIVAL_NS_KEY]``
(``time.monotonic_ns()``, the base of the app's default clock), so queueing in front of the app
counts; without the stamp the app's first sight of the request stands in.

Three tensor contracts behind a route (``routes.yaml`` ``protocol``): ``engine`` (the default:
the ``tensorrt_llm`` model itself; the router tokenizes once, sends ids and detokenizes the
``output_ids`` with ``engine``), ``ensemble`` (our BLS or the ensembles, text in and out) and
``llmapi`` (the LLM-API model, cumulative text out). Each is one class in ``protocols``, chosen once
per model when the routes are installed: it builds the inputs and turns the answers into text pieces.

Disconnects: the server silently drops writes to a closed connection, so each inference request runs
next to a watcher of ``http.disconnect`` that cancels it; cancellation closes the upstream stream,
which cancels the request inside Triton.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import orjson

from generator.router.admission import Admission
from generator.router.auth import ApiKeys, load_api_keys
from generator.router.config import Aggregated, ModelRoute, Routes
from generator.router.disagg import DisaggregatedFlow
from generator.router.dispatch import Dispatcher, PoolTarget, Resume
from generator.router.metrics import RouterMetrics
from generator.router.openapi import openapi_document
from generator.router.policies import Hints, block_hashes, make_policy, policy_kind
from generator.router.protocol import ApiError, OpenAIRequest, Shaper, error_body, parse_request, sse
from generator.router.protocols import UpstreamProtocol, upstream_protocol
from generator.router.replicas import PoolState, ReplicaMonitor
from generator.router.stops import StopTrimmer
from generator.router.tokens import ModelTokenizer, TokenizerLoader, check_prompt_bytes, load_tokenizer
from generator.router.upstream import GenerateCall, Response, Upstream
from generator.spec.router import COMPLETIONS_DEFAULT_MAX_TOKENS

__all__ = ["ARRIVAL_NS_KEY", "RouterApp"]

log = logging.getLogger("tritonstack.router")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ARRIVAL_NS_KEY = "tritonstack.arrival_ns"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_JSON = (b"content-type", b"application/json")


@dataclass
class ModelEntry:
    name: str
    route: ModelRoute
    tokenizer: ModelTokenizer
    pool_label: str
    pools: tuple[PoolState, ...]
    protocol: UpstreamProtocol  # routes.yaml serving.protocol, chosen once here
    aggregated: PoolTarget | None = None
    triton_model: str = ""
    disaggregated: DisaggregatedFlow | None = None


class RouterApp:
    def __init__(
        self,
        routes: Routes,
        upstream: Upstream,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        tokenizer_loader: TokenizerLoader = load_tokenizer,
        environ: dict[str, str] | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.routes = routes
        self.upstream = upstream
        self.clock = clock
        self.wall_clock = wall_clock
        self.tokenizer_loader = tokenizer_loader
        self.environ = environ
        self.pools: dict[str, PoolState] = {}
        self.models: dict[str, ModelEntry] = {}
        # metrics_dir: the --workers parent's shared directory (PROMETHEUS_MULTIPROC_DIR), else None.
        self.metrics = RouterMetrics(lambda: list(self.pools.values()), metrics_dir)
        self._publisher: asyncio.Task[None] | None = None
        self.keys: ApiKeys = load_api_keys(routes.router, environ)
        self.monitor: ReplicaMonitor | None = None
        self.draining = False
        self._tokenizers: dict[tuple[str, bool], ModelTokenizer] = {}
        # Request ids: a random prefix per process and a counter (no system call per request).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)

    # ------------------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        await self._install(self.routes)
        if self.metrics.multiprocess_dir is not None:
            self._publisher = asyncio.create_task(self._publish_metrics())

    async def shutdown(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        if self.monitor is not None:
            await self.monitor.stop()
        await self.upstream.close()

    async def _publish_metrics(self) -> None:
        while True:
            self.metrics.publish()
            await asyncio.sleep(1.0)

    async def reload(self, routes: Routes) -> None:
        """Swap in new routes. Requests in flight keep the pool and replica objects they hold;
        pools and replicas that survive the reload keep their counters."""
        await self._install(routes)
        log.info("router config reloaded: %d models, %d pools", len(self.models), len(self.pools))

    async def _install(self, routes: Routes) -> None:
        keys = load_api_keys(routes.router, self.environ)
        tokenizers = {}
        for model in routes.models.values():
            key = (model.tokenizer_dir, model.add_special_tokens)
            if key not in self._tokenizers and key not in tokenizers:
                raw = await asyncio.to_thread(self.tokenizer_loader, model.tokenizer_dir)
                tokenizers[key] = ModelTokenizer(raw, model.add_special_tokens)
        self._tokenizers.update(tokenizers)
        settings = routes.router
        pools = {
            name: self.pools.get(name) or PoolState(name=name, role=route.role)
            for name, route in routes.pools.items()
        }
        for name, route in routes.pools.items():
            pools[name].role = route.role
        dispatcher = Dispatcher(self.upstream, Admission(settings), settings, self.metrics, self.clock)
        policies = {name: make_policy(settings.policy, settings) for name in pools}
        models = {}
        for name, model in routes.models.items():
            tokenizer = self._tokenizers[(model.tokenizer_dir, model.add_special_tokens)]
            serving = model.serving
            if isinstance(serving, Aggregated):
                pool = pools[serving.pool]
                models[name] = ModelEntry(
                    name,
                    model,
                    tokenizer,
                    pool.name,
                    (pool,),
                    upstream_protocol(serving.protocol),
                    aggregated=PoolTarget(pool, policies[pool.name]),
                    triton_model=serving.triton_model,
                )
            else:
                prefill, decode = pools[serving.prefill.pool], pools[serving.decode.pool]
                flow = DisaggregatedFlow(
                    dispatcher,
                    self.metrics,
                    PoolTarget(prefill, policies[prefill.name]),
                    serving.prefill.triton_model,
                    PoolTarget(decode, policies[decode.name]),
                    serving.decode.triton_model,
                    settings.prefill_timeout_s,
                    upstream_protocol(serving.protocol),
                    self.clock,
                )
                models[name] = ModelEntry(
                    name,
                    model,
                    tokenizer,
                    f"{prefill.name}+{decode.name}",
                    (prefill, decode),
                    upstream_protocol(serving.protocol),
                    disaggregated=flow,
                )
        old_monitor = self.monitor
        monitor = ReplicaMonitor(pools, dict(routes.pools), self.upstream, settings, self.clock)
        await monitor.refresh_membership()
        await monitor.check_health()
        # Swap everything at once: a request sees either the old table or the new one.
        self.routes, self.keys, self.pools, self.models = routes, keys, pools, models
        self.dispatcher, self.monitor = dispatcher, monitor
        if old_monitor is not None:
            await old_monitor.stop()
        await monitor.start()

    # ------------------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 (any startup failure is reported to the server, which exits non-zero)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        raw_id = headers.get(b"x-request-id", b"")
        request_id = raw_id.decode() if _REQUEST_ID.match(raw_id) else self._new_request_id()
        echo = [(b"x-request-id", request_id.encode())]
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._route(scope, receive, tracked, headers, request_id, echo)
        except Exception:  # a bug must not become a plain-text 500 with a traceback
            log.exception("request %s (%s %s) failed", request_id, scope["method"], scope["path"])
            if not started:
                await _send_error(send, _internal(request_id), echo)

    async def _route(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        request_id: str,
        echo: list[tuple[bytes, bytes]],
    ) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/v1/chat/completions", "/v1/completions"):
            if method != "POST":
                await _send_error(send, ApiError(405, f"use POST for {path}"), [*echo, (b"allow", b"POST")])
                return
            await self._generate(
                scope, receive, send, headers, request_id, echo, path == "/v1/chat/completions"
            )
            return
        if method not in ("GET", "HEAD"):  # the server leaves the body out of a HEAD answer
            if path in _GET_PATHS:
                allow = (b"allow", b"GET, HEAD")
                await _send_error(send, ApiError(405, f"use GET for {path}"), [*echo, allow])
            else:
                await _send_error(send, ApiError(404, f"no route for {method} {path}"), echo)
            return
        if path == "/health":
            await _send_json(send, 200, b'{"status":"ok"}', echo)
        elif path == "/ready":
            status, body = self._readiness()
            await _send_json(send, status, orjson.dumps(body), echo)
        elif path == "/metrics":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"), *echo],
                }
            )
            await send({"type": "http.response.body", "body": self.metrics.exposition()})
        elif path == "/openapi.json":
            document = openapi_document(self.routes)
            await _send_json(send, 200, orjson.dumps(document), echo)
        elif path == "/v1/models":
            if not self.keys.allows(headers.get(b"authorization")):
                await _send_error(send, _unauthorized(), echo)
                return
            created = int(self.wall_clock())
            data = [
                {"id": n, "object": "model", "created": created, "owned_by": "tritonstack"}
                for n in self.models
            ]
            await _send_json(send, 200, orjson.dumps({"object": "list", "data": data}), echo)
        else:
            await _send_error(send, ApiError(404, f"no route for GET {path}"), echo)

    def _new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):08x}"

    def _readiness(self) -> tuple[int, dict[str, Any]]:
        models = {name: all(p.ready_count > 0 for p in entry.pools) for name, entry in self.models.items()}
        ready = bool(models) and all(models.values()) and not self.draining
        return (200 if ready else 503), {"ready": ready, "draining": self.draining, "models": models}

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        limit = self.routes.router.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body over {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _generate(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        request_id: str,
        echo: list[tuple[bytes, bytes]],
        chat: bool,
    ) -> None:
        stamped = scope.get(ARRIVAL_NS_KEY)
        arrived = stamped / 1e9 if stamped is not None else self.clock()
        model_label, pool_label = "", ""
        try:
            if not self.keys.allows(headers.get(b"authorization")):
                raise _unauthorized()
            if self.draining:
                raise ApiError(
                    503, "the router is shutting down", "server_error", retry_after=self.routes.router.retry_after_s
                )
            request = parse_request(await self._read_body(receive, headers), chat)
            entry = self.models.get(request.model)
            if entry is None:
                raise ApiError(
                    404,
                    f"model {request.model!r} does not exist; GET /v1/models lists the models",
                    param="model",
                    code="model_not_found",
                )
            model_label, pool_label = entry.name, entry.pool_label
            call, hints, prompt = await self._prepare(entry, request, request_id, headers)
        except ApiError as error:
            self.metrics.requests.labels(model_label, pool_label, str(error.status)).inc()
            await _send_error(send, error, echo)
            return
        except asyncio.CancelledError:
            return  # the client left while sending the body
        exchange = _Exchange(self, entry, request, request_id, call, hints, prompt, arrived, send, echo)
        await _run_until_disconnect(
            receive, exchange.respond(), lambda: self.metrics.client_disconnects.labels(entry.name).inc()
        )
        self.metrics.requests.labels(entry.name, entry.pool_label, str(exchange.status)).inc()

    async def _prepare(
        self, entry: ModelEntry, request: OpenAIRequest, request_id: str, headers: dict[bytes, bytes]
    ) -> tuple[GenerateCall, Hints, _PromptSize]:
        route = entry.route
        if request.chat and not route.chat:
            raise ApiError(400, f"model {entry.name!r} does not accept chat requests; use /v1/completions")
        max_tokens = request.max_tokens or (
            route.max_output_len if request.chat else min(COMPLETIONS_DEFAULT_MAX_TOKENS, route.max_output_len)
        )
        if max_tokens > route.max_output_len:
            raise ApiError(
                400,
                f"max_tokens {max_tokens} exceeds this model's limit of {route.max_output_len}",
                param="max_tokens",
            )
        tokenizer = entry.tokenizer
        try:
            text, special = tokenizer.prompt_text(request.prompt, request.messages)
        # The template runs on the client's messages: jinja2's TemplateError from raise_exception(),
        # or any error of a template's own logic, is the request's fault.
        except Exception as exc:  # noqa: BLE001
            raise ApiError(
                400, f"cannot build the prompt for model {entry.name!r}: {exc}", param="messages"
            ) from None
        settings = self.routes.router
        # A prompt whose size alone is far over the limit is refused before any tokenizing.
        check_prompt_bytes(
            text,
            route.max_input_len,
            settings.prompt_bytes_per_token,
            model=entry.name,
            param="messages" if request.chat else "prompt",
        )
        ids: list[int] | None = None
        bound = tokenizer.token_bound(text, special)
        # One tokenization per request: the engine path sends these ids, prefix-aware routing hashes
        # them, and the usage count is their length.
        if (
            entry.protocol.needs_token_ids
            or bound is None
            or bound > route.max_input_len
            or policy_kind(settings.policy).needs_token_ids
        ):
            ids = await tokenizer.encode(text, special)
            if len(ids) > route.max_input_len:
                raise ApiError(
                    400,
                    f"the prompt has {len(ids)} tokens; model {entry.name!r} accepts at most "
                    f"{route.max_input_len}",
                    param="messages" if request.chat else "prompt",
                    code="context_length_exceeded",
                )
        request.max_tokens = max_tokens
        # A model served without streaming (not decoupled) answers once; a client that asked for a
        # stream still gets SSE, with the whole text in one event.
        inputs = entry.protocol.inputs(
            model=entry.name,
            route=route,
            request=request,
            max_tokens=max_tokens,
            text=text,
            ids=ids,
            tokenizer=tokenizer,
            stream=request.stream and route.streaming,
        )
        session = headers.get(settings.session_header.lower().encode())
        hints = Hints(
            session=session.decode(errors="replace") if session else request.user,
            blocks=block_hashes(ids, settings.prefix_block_tokens) if ids is not None else (),
        )
        prompt = _PromptSize(text, special, None if ids is None else len(ids))
        return GenerateCall(model="", inputs=inputs, request_id=request_id), hints, prompt


@dataclass
class _PromptSize:
    """The prompt as the model encodes it; its token count is computed only when asked for (the
    length check usually passes on a bound, and Triton usually reports the count)."""

    text: str
    special: bool
    count: int | None

    def tokens(self, tokenizer: ModelTokenizer) -> int:
        if self.count is None:
            self.count = tokenizer.count(self.text, self.special)
        return self.count


class _Exchange:
    """One inference request from dispatch to the last byte; remembers the status it ended with."""

    def __init__(
        self,
        app: RouterApp,
        entry: ModelEntry,
        request: OpenAIRequest,
        request_id: str,
        call: GenerateCall,
        hints: Hints,
        prompt: _PromptSize,
        arrived: float,
        send: Send,
        echo: list[tuple[bytes, bytes]],
    ) -> None:
        self.app, self.entry, self.request, self.call, self.hints = app, entry, request, call, hints
        self.prompt, self.arrived, self.send, self.echo = prompt, arrived, send, echo
        self.shaper = Shaper(request, request_id, int(app.wall_clock()))
        self.status = 499  # until proven otherwise: the client went away
        self.started = False
        self.itl = app.metrics.itl.labels(entry.name)

    def _responses(self) -> AsyncIterator[Response]:
        entry = self.entry
        if entry.aggregated is not None:
            protocol, route, tokenizer = entry.protocol, entry.route, entry.tokenizer

            def go_on(call: GenerateCall, streamed: list[Response]) -> GenerateCall | None:
                return protocol.resume(call, streamed, route, tokenizer)

            # Only a protocol that can go on elsewhere has the dispatcher keep what was streamed.
            resume: Resume | None = go_on if protocol.resumable else None
            responses = protocol.pieces(
                self.app.dispatcher.stream(
                    entry.aggregated, replace(self.call, model=entry.triton_model), self.hints, resume=resume
                )
            )
        else:
            assert entry.disaggregated is not None  # the flow hands out pieces itself
            responses = entry.disaggregated.run(
                entry.name, self.call, self.hints, self.request.stream and entry.route.streaming, self._finished
            )
        return entry.protocol.responses(responses, entry.tokenizer, lambda: self.prompt.tokens(entry.tokenizer))

    def _finished(self, context: Response) -> bool:
        """Did the prefill phase already end the request?"""
        if self.request.max_tokens == 1:
            return True
        tokenizer = self.entry.tokenizer
        if context.output_ids and context.output_ids[-1] in tokenizer.end_ids:
            return True
        text = self.entry.protocol.text(context, tokenizer)
        return any(stop in text for stop in self.request.stop)

    def _usage(self, text: str, last: Response | None) -> dict[str, int]:
        tokenizer = self.entry.tokenizer
        if last and last.num_input_tokens is not None:
            prompt = last.num_input_tokens
        else:
            prompt = self.prompt.tokens(tokenizer)
        completion = (
            last.num_output_tokens if last and last.num_output_tokens is not None else tokenizer.count(text)
        )
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def respond(self) -> None:
        metrics, model, clock = self.app.metrics, self.entry.name, self.app.clock
        pieces: list[str] = []  # what the client gets: cut before the first stop string
        generated: list[str] = []  # what the model produced, for usage counted by the tokenizer
        trimmer = StopTrimmer(self.request.stop)
        last: Response | None = None
        counts: Response | None = None
        previous = self.arrived
        try:
            async with asyncio.timeout(self.app.routes.router.request_timeout_s):
                # Leaving the loop at a stop string closes the responses, which cancels upstream.
                async with aclosing(self._responses()) as responses:
                    async for response in responses:
                        last = response
                        if response.num_output_tokens is not None or response.num_input_tokens is not None:
                            counts = response
                        generated.append(response.text)
                        piece = trimmer.feed(response.text)
                        pieces.append(piece)
                        if self.request.stream:
                            previous = await self._stream_piece(piece, previous)
                        if trimmer.stopped:
                            break
                piece = trimmer.flush()
                pieces.append(piece)
                if self.request.stream and piece:
                    await self._stream_piece(piece, previous)
        except ApiError as error:
            await self._fail(error)
            return
        except TimeoutError:
            await self._fail(
                ApiError(504, f"request exceeded {self.app.routes.router.request_timeout_s}s", "server_error")
            )
            return
        except Exception:  # logged with the request id; the client gets a 500 answer or event
            log.exception("request %s failed", self.shaper.id)
            await self._fail(_internal(self.shaper.id))
            return
        text = "".join(pieces)
        usage = self._usage("".join(generated), counts or last)
        finish = self._finish_reason(trimmer.stopped, last, usage["completion_tokens"])
        metrics.prompt_tokens.labels(model).inc(usage["prompt_tokens"])
        metrics.generated_tokens.labels(model).inc(usage["completion_tokens"])
        self.status = 200
        if self.request.stream:
            if not self.started:
                await self._start_stream()
                metrics.ttft.labels(model).observe(clock() - self.arrived)
            tail = sse(self.shaper.chunk("", finish, with_usage_key=self.request.include_usage))
            if self.request.include_usage:
                tail += sse(self.shaper.usage_chunk(usage))
            await self.send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
        else:
            body = orjson.dumps(self.shaper.complete(text, finish, usage))
            await _send_json(self.send, 200, body, self.echo)
            metrics.ttft.labels(model).observe(clock() - self.arrived)
        metrics.e2e.labels(model).observe(clock() - self.arrived)

    async def _stream_piece(self, piece: str, previous: float) -> float:
        """Send one piece of streamed text (the headers first); returns when it was sent, for ITL."""
        metrics, model, now = self.app.metrics, self.entry.name, self.app.clock()
        if not self.started:
            await self._start_stream()
            metrics.ttft.labels(model).observe(now - self.arrived)
        elif piece:
            self.itl.observe(now - previous)
        if piece:
            await self.send(
                {"type": "http.response.body", "body": self.shaper.text_event(piece), "more_body": True}
            )
        return now

    def _finish_reason(self, stopped: bool, last: Response | None, completion_tokens: int) -> str:
        if stopped:
            return "stop"
        if last is not None and last.finish_reason in ("stop", "length"):
            return last.finish_reason  # the LLM-API model says why it ended
        return "length" if completion_tokens >= (self.request.max_tokens or 0) else "stop"

    async def _start_stream(self) -> None:
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    *self.echo,
                ],
            }
        )

    async def _fail(self, error: ApiError) -> None:
        self.status = error.status
        if self.started:  # headers are out: the only way left to tell the client is an error event
            payload = {
                "error": {"message": error.message, "type": error.kind, "param": None, "code": error.code}
            }
            await self.send({"type": "http.response.body", "body": sse(payload) + b"data: [DONE]\n\n"})
        else:
            await _send_error(self.send, error, self.echo)


_GET_PATHS = frozenset({"/health", "/ready", "/metrics", "/v1/models", "/openapi.json"})


def _internal(request_id: str) -> ApiError:
    return ApiError(500, f"internal error in the router (request {request_id}); it is logged", "server_error")


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "missing or invalid API key (send Authorization: Bearer <key>)",
        "authentication_error",
        code="invalid_api_key",
    )


async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [_JSON, *extra]})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, error: ApiError, extra: list[tuple[bytes, bytes]]) -> None:
    headers = list(extra)
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    await _send_json(send, error.status, error_body(error), headers)


async def _run_until_disconnect(
    receive: Receive, work: Awaitable[None], on_disconnect: Callable[[], None]
) -> None:
    """Run ``work``; if the client disconnects first, cancel it (which cancels upstream work)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        on_disconnect()
    finally:
        watcher.cancel()
