"""Talking to one tritonserver replica: a generate call that streams responses, readiness, metrics.

Two transports implement the same surface. HTTP ``generate_stream`` (SSE, on the router's own
HTTP/1.1 client) is the default: ``benchmarks/router_overhead.py`` measures it cheaper per token and
per request; closing the connection cancels the request in Triton (the quickstart disconnect test
sees the engine's ``cancelled`` counter move). gRPC (``ModelStreamInfer`` on grpc.aio) is the
alternative: ``context_phase_params`` travels as raw bytes there, and cancellation is documented
for gRPC clients.

Errors split by who caused them, because the router reacts differently (:func:`classify_error`):
:class:`UpstreamUnavailable` (transport: refused, reset, timed out, HTTP 502/503/504, gRPC
UNAVAILABLE — the replica may be gone; retry elsewhere before the first byte, count towards
ejection), :class:`UpstreamRejected` (Triton or the model refused this request's inputs: the
client's 400, never retried, never counted) and :class:`UpstreamFailed` (any other error Triton
answered for this request: 502, not retried, not counted). A model's error response carries no
code (the python backend answers HTTP 400 for every error, and Triton's HTTP frontend 500 for a
JSON value it cannot parse), so the message decides whether it blames the input.
"""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import grpc
import numpy as np
import orjson
from tritonclient.grpc import service_pb2, service_pb2_grpc

from generator.router.config import Endpoint
from generator.router.http1 import Http1Client, Http1Error
from generator.spec.router import (
    GRPC_KEEPALIVE_TIME_MS,
    GRPC_MAX_MESSAGE_BYTES,
    GRPC_RECONNECT_BACKOFF_MS,
)

__all__ = [
    "INPUT_ROWS",
    "INPUT_TYPES",
    "GenerateCall",
    "GrpcUpstream",
    "HttpUpstream",
    "Response",
    "Upstream",
    "UpstreamError",
    "UpstreamFailed",
    "UpstreamRejected",
    "UpstreamUnavailable",
    "classify_error",
]

# Datatypes of the ensemble/BLS inputs the router may send (names from the rendered model configs).
INPUT_TYPES: dict[str, str] = {
    "text_input": "BYTES",
    "messages": "BYTES",
    "max_tokens": "INT32",
    "stream": "BOOL",
    "temperature": "FP32",
    "top_p": "FP32",
    "top_k": "INT32",
    "seed": "UINT64",
    "random_seed": "UINT64",
    "stop_words": "BYTES",
    "min_tokens": "INT32",
    "min_length": "INT32",
    "presence_penalty": "FP32",
    "frequency_penalty": "FP32",
    "end_id": "INT32",
    "exclude_input_in_output": "BOOL",
    "return_num_input_tokens": "BOOL",
    "return_num_output_tokens": "BOOL",
    "context_phase_params": "UINT8",
    # The LLM-API model (render/model_repo/llmapi.py LLMAPI_INPUTS; upstream
    # https://github.com/NVIDIA/TensorRT-LLM/tree/main/triton_backend/all_models/llmapi).
    "streaming": "BOOL",
    "sampling_param_max_tokens": "INT32",
    "sampling_param_temperature": "FP32",
    "sampling_param_top_p": "FP32",
    "sampling_param_top_k": "INT32",
    "sampling_param_seed": "UINT64",
    "sampling_param_stop": "BYTES",
    "sampling_param_presence_penalty": "FP32",
    "sampling_param_frequency_penalty": "FP32",
    "sampling_param_exclude_input_from_output": "BOOL",
    "return_finish_reason": "BOOL",
    # tritonstack's LLM-API model in a decode pool: the prefill answer's hand-over, passed on unchanged.
    "disaggregated_params": "UINT8",
    # The tensorrt_llm model itself (engine-direct path, generator/router/engine.py).
    "input_ids": "INT32",
    "input_lengths": "INT32",
    "request_output_len": "INT32",
    "pad_id": "INT32",
    "runtime_top_k": "INT32",
    "runtime_top_p": "FP32",
    "stop_words_list": "INT32",
}
# Inputs declared with more than one dimension: their declared leading dims (the rest is -1). They
# travel flat, as a list, and take this shape here (gRPC) or from the model config (HTTP generate).
INPUT_ROWS: dict[str, int] = {"stop_words_list": 2}
_NUMPY = {"INT32": np.int32, "UINT64": np.uint64, "FP32": np.float32, "BOOL": np.bool_, "UINT8": np.uint8}


class UpstreamError(Exception):
    """Base of upstream errors; internal to the router, never shown as a traceback."""


class UpstreamUnavailable(UpstreamError):
    """The replica could not be reached or stopped answering (transport level)."""


class UpstreamFailed(UpstreamError):
    """Triton answered this request with an error."""


class UpstreamRejected(UpstreamFailed):
    """Triton or the model refused this request's inputs: the client's error, not the replica's."""


# What Triton's frontends and core, the python backend and our models say about a bad input value:
# "Unable to parse 'data'" (HTTP frontend, a JSON value the tensor cannot hold), "unexpected shape
# for input", "expected N inputs", the reference engine's "sampling settings out of range", the
# BLS's "... is required", a tokenizer's "... is too long".
_INVALID_INPUT = re.compile(
    r"unable to parse|invalid|out of range|unexpected|expected|must be|is required|is missing|"
    r"not allowed|not supported|too long|too large|exceeds",
    re.IGNORECASE,
)


def classify_error(message: str, status: int | None = None) -> UpstreamError:
    """The error for Triton's answer ``message``, with its HTTP ``status`` when it came with one."""
    if status in (502, 503, 504):
        return UpstreamUnavailable(f"HTTP {status}: {message}")
    text = message if status is None else f"HTTP {status}: {message}"
    if _INVALID_INPUT.search(message):
        return UpstreamRejected(text)
    return UpstreamFailed(text)


@dataclass(frozen=True)
class GenerateCall:
    model: str
    inputs: dict[str, Any]  # name -> scalar, str, list[str], list[int] or bytes (UINT8)
    request_id: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    """One upstream response, decoded to what the router uses."""

    text: str = ""
    output_ids: list[int] | None = None
    num_input_tokens: int | None = None
    num_output_tokens: int | None = None
    context_phase_params: bytes | None = None
    finish_reason: str | None = None  # the LLM-API model's: "stop", "length", "cancelled", ...
    disaggregated_params: bytes | None = None  # the LLM-API prefill answer's hand-over (JSON bytes)


@dataclass(frozen=True)
class _ModelInfo:
    """What the router needs from a Triton model's config, read once per replica and model."""

    batched: bool  # max_batch_size > 0: inputs take a leading batch dimension of 1
    inputs: frozenset[str]

    def accepted(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # Optional inputs differ by release and role (a prefill ensemble has no `stream`; 25.05 has
        # no return_num_*): send only what this model declares, so one request shape fits all.
        return {k: v for k, v in inputs.items() if k in self.inputs}


class Upstream(Protocol):
    def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]: ...

    async def ready(self, endpoint: Endpoint, timeout: float) -> bool: ...

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str: ...

    async def close(self) -> None: ...


def _ints(value: Any) -> list[int]:
    """Integers of an output tensor: a JSON number or (nested) list, or a numpy array from gRPC."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        if value and isinstance(value[0], list):
            return [int(i) for row in value for i in row]
        return [int(i) for i in value]
    return [int(i) for i in np.asarray(value).reshape(-1)]


def _decode_outputs(named: dict[str, Any]) -> Response:
    out = Response()
    text = named.get("text_output")
    if isinstance(text, list):
        text = "".join(text)
    out.text = text or ""
    ids = named.get("output_ids")
    if ids is not None:
        out.output_ids = _ints(ids)
    value = named.get("num_input_tokens")
    if value is not None:
        out.num_input_tokens = _ints(value)[0]
    value = named.get("num_output_tokens")
    if value is not None:
        out.num_output_tokens = _ints(value)[0]
    reason = named.get("finish_reason")
    if isinstance(reason, list):
        reason = reason[0] if reason else None
    # The LLM-API model sends str(None) while a streamed request is still running.
    out.finish_reason = reason if reason and reason != "None" else None
    for name in ("context_phase_params", "disaggregated_params"):
        params = named.get(name)
        if params is not None:
            setattr(out, name, params if isinstance(params, bytes) else bytes(np.asarray(params, np.uint8)))
    return out


# --------------------------------------------------------------------------------------------- gRPC


def _serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _deserialize_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset : offset + length])
        offset += length
    return items


class GrpcUpstream:
    """gRPC ``ModelStreamInfer``, one stream per request, cancelled when the caller stops reading."""

    def __init__(self, connect_timeout: float, message_bytes: int = GRPC_MAX_MESSAGE_BYTES) -> None:
        self._connect_timeout = connect_timeout
        self._message_bytes = message_bytes
        self._channels: dict[tuple[str, int], tuple[grpc.aio.Channel, Any]] = {}
        self._models: dict[tuple[str, int, str], _ModelInfo] = {}
        self._http = _HttpSide(connect_timeout)

    def _stub(self, endpoint: Endpoint) -> Any:
        key = (endpoint.host, endpoint.grpc)
        if key not in self._channels:
            channel = grpc.aio.insecure_channel(
                f"{endpoint.host}:{endpoint.grpc}",
                options=[
                    ("grpc.max_send_message_length", self._message_bytes),
                    ("grpc.max_receive_message_length", self._message_bytes),
                    ("grpc.keepalive_time_ms", GRPC_KEEPALIVE_TIME_MS),
                    ("grpc.initial_reconnect_backoff_ms", GRPC_RECONNECT_BACKOFF_MS[0]),
                    ("grpc.max_reconnect_backoff_ms", GRPC_RECONNECT_BACKOFF_MS[1]),
                ],
            )
            self._channels[key] = (channel, service_pb2_grpc.GRPCInferenceServiceStub(channel))
        return self._channels[key][1]

    async def _model_info(self, endpoint: Endpoint, model: str) -> _ModelInfo:
        key = (endpoint.host, endpoint.grpc, model)
        if key not in self._models:
            try:
                reply = await self._stub(endpoint).ModelConfig(
                    service_pb2.ModelConfigRequest(name=model), timeout=self._connect_timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise _translate(exc) from None
            config = reply.config
            self._models[key] = _ModelInfo(config.max_batch_size > 0, frozenset(i.name for i in config.input))
        return self._models[key]

    def _request(self, call: GenerateCall, info: _ModelInfo) -> Any:
        request = service_pb2.ModelInferRequest(model_name=call.model, id=call.request_id)
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        for key, value in call.parameters.items():
            request.parameters[key].string_param = value
        for name, value in info.accepted(call.inputs).items():
            datatype = INPUT_TYPES[name]
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            if datatype == "UINT8":
                raw, count = bytes(value), len(value)
            elif datatype == "BYTES":
                items = [v.encode() for v in value] if isinstance(value, list) else [str(value).encode()]
                raw, count = _serialize_bytes(items), len(items)
            else:
                array = np.asarray(value if isinstance(value, list) else [value], dtype=_NUMPY[datatype])
                raw, count = array.tobytes(), array.size
            rows = INPUT_ROWS.get(name)
            shape = [count] if rows is None else [rows, count // rows]
            tensor.shape.extend([1, *shape] if info.batched else shape)
            request.raw_input_contents.append(raw)
        return request

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        try:
            request = self._request(call, await self._model_info(endpoint, call.model))
        except (OverflowError, ValueError, TypeError) as exc:  # numpy: a value the tensor cannot hold
            raise UpstreamRejected(f"invalid input value: {exc}") from None

        async def one_request() -> AsyncIterator[Any]:
            yield request

        stream = self._stub(endpoint).ModelStreamInfer(one_request())
        try:
            async for message in stream:
                if message.error_message:
                    raise classify_error(message.error_message)
                infer = message.infer_response
                final = (
                    infer.parameters["triton_final_response"].bool_param
                    if "triton_final_response" in infer.parameters
                    else False
                )
                if infer.outputs:
                    yield _decode_grpc_outputs(infer)
                if final:
                    return
            raise UpstreamUnavailable("the stream ended before the final response")
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from None
        finally:
            # Cancelling tells Triton to stop work for this request (no-op once it finished).
            stream.cancel()

    async def ready(self, endpoint: Endpoint, timeout: float) -> bool:
        try:
            reply = await self._stub(endpoint).ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.ready)

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str:
        return await self._http.metrics_text(endpoint, timeout)

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()
        await self._http.close()


def _decode_grpc_outputs(infer: Any) -> Response:
    named: dict[str, Any] = {}
    for tensor, raw in zip(infer.outputs, infer.raw_output_contents):
        if tensor.datatype == "BYTES":
            named[tensor.name] = [b.decode("utf-8", errors="replace") for b in _deserialize_bytes(raw)]
        elif tensor.datatype == "UINT8":
            named[tensor.name] = bytes(raw)
        elif tensor.datatype in ("INT32", "INT64"):
            named[tensor.name] = np.frombuffer(
                raw, dtype=np.int32 if tensor.datatype == "INT32" else np.int64
            )
    return _decode_outputs(named)


def _translate(exc: grpc.aio.AioRpcError) -> UpstreamError:
    code = exc.code()
    transport = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
    if code in transport:
        return UpstreamUnavailable(f"{code.name}: {exc.details()}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return UpstreamRejected(f"{code.name}: {exc.details()}")
    return classify_error(f"{code.name}: {exc.details()}")


# --------------------------------------------------------------------------------------------- HTTP


class _HttpSide:
    """aiohttp session for the HTTP parts: /metrics always, generate_stream for HttpUpstream."""

    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            )
        return self._session

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str:
        url = f"http://{endpoint.host}:{endpoint.metrics}/metrics"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                return await reply.text() if reply.status == 200 else ""
        except (TimeoutError, aiohttp.ClientError):
            return ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpUpstream:
    """HTTP ``generate_stream`` (SSE) on the lean client (:mod:`generator.router.http1`); aiohttp for
    the rest. Closing the connection is how a request is abandoned."""

    def __init__(self, connect_timeout: float) -> None:
        self._http = _HttpSide(connect_timeout)
        self._client = Http1Client(connect_timeout)
        self._models: dict[tuple[str, int, str], _ModelInfo] = {}

    async def _model_info(self, endpoint: Endpoint, model: str) -> _ModelInfo:
        key = (endpoint.host, endpoint.http, model)
        if key not in self._models:
            url = f"http://{endpoint.host}:{endpoint.http}/v2/models/{model}/config"
            try:
                async with self._http.session.get(url) as reply:
                    if reply.status != 200:
                        raise UpstreamFailed(f"HTTP {reply.status} reading the config of {model}")
                    config = orjson.loads(await reply.read())
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from None
            inputs = frozenset(i["name"] for i in config.get("input", []))
            self._models[key] = _ModelInfo(config.get("max_batch_size", 0) > 0, inputs)
        return self._models[key]

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        info = await self._model_info(endpoint, call.model)
        body: dict[str, Any] = {}
        for name, value in info.accepted(call.inputs).items():
            body[name] = list(value) if isinstance(value, bytes) else value
        body.update(call.parameters)
        path = f"/v2/models/{call.model}/generate_stream"
        try:
            reply = await self._client.post(endpoint.host, endpoint.http, path, orjson.dumps(body))
        except Http1Error as exc:
            raise UpstreamUnavailable(str(exc)) from None
        try:
            if reply.status != 200:
                raise classify_error(_error_text(await reply.read_all()), reply.status)
            pending = b""
            while chunk := await reply.read_chunk():
                pending = pending + chunk if pending else chunk
                # One SSE event per response: "data: {...}\n\n".
                while (end := pending.find(b"\n\n")) >= 0:
                    event, pending = pending[:end], pending[end + 2 :]
                    if not event.startswith(b"data:"):
                        continue
                    payload = orjson.loads(event[5:])
                    if "error" in payload:
                        raise classify_error(str(payload["error"]))
                    yield _decode_outputs(payload)
        except Http1Error as exc:
            raise UpstreamUnavailable(str(exc)) from None
        finally:
            reply.close()

    async def ready(self, endpoint: Endpoint, timeout: float) -> bool:
        url = f"http://{endpoint.host}:{endpoint.http}/v2/health/ready"
        try:
            async with self._http.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                return reply.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str:
        return await self._http.metrics_text(endpoint, timeout)

    async def close(self) -> None:
        self._client.close()
        await self._http.close()


def _error_text(body: bytes) -> str:
    """The message of a Triton error answer: ``{"error": ...}``, as JSON or as one SSE event (a
    model's error response on generate_stream), else the body itself; at most 300 characters."""
    text = body.decode(errors="replace").strip()
    candidate = text.removeprefix("data:")
    try:
        payload = orjson.loads(candidate)
    except orjson.JSONDecodeError:
        return text[:300]
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])[:300]
    return text[:300]
