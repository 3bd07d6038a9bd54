"""The OpenAI wire format: parsing requests into :class:`OpenAIRequest` (every mistake becomes an
:class:`ApiError` with the status and shape OpenAI clients expect) and shaping responses/chunks.

Every field is checked before anything reaches Triton, against what the engine takes: Triton's HTTP
frontend wraps an out-of-range JSON integer into the tensor's type silently (``top_k`` 2**32+5
arrives as 5) or answers 500 ("Unable to parse 'data'") for one it cannot hold, which would look
like a failing replica. Ranges are OpenAI's where it documents one (temperature 0–2, penalties
−2…2, at most 4 stop sequences), the tensor's otherwise (``top_k`` INT32, ``seed`` UINT64).
OpenAI fields the router cannot honour (``n`` > 1, tools, logprobs, ``response_format`` other than
text, ...) are refused by name rather than dropped; a neutral value (``tools: []``, ``n: 1``) is
accepted. Fields OpenAI does not define are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "CHAT_ROLES",
    "INT32_MAX",
    "MAX_STOP_CHARS",
    "MAX_STOP_SEQUENCES",
    "UINT64_MAX",
    "UNSUPPORTED_FIELDS",
    "ApiError",
    "OpenAIRequest",
    "Shaper",
    "error_body",
    "parse_request",
    "sse",
]

INT32_MAX = 2**31 - 1  # max_tokens, top_k: TYPE_INT32 inputs of the ensemble, BLS and LLM-API model
UINT64_MAX = 2**64 - 1  # seed: TYPE_UINT64
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_STOP_CHARS = 256  # each stop string: it is tokenized and matched on every response
MAX_TEXT_FIELD_CHARS = 256  # model, user and the other free-text fields that reach logs and labels
# What our chat templates take; "tool"/"function" need tool calls, "developer" is OpenAI's renamed
# "system" for its reasoning models, which a model's template does not know.
CHAT_ROLES = ("system", "user", "assistant")


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.retry_after = retry_after


def error_body(error: ApiError) -> bytes:
    payload = {
        "error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}
    }
    return orjson.dumps(payload)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass
class OpenAIRequest:
    chat: bool
    model: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not in OpenAI's API; vLLM and trtllm-serve accept it, so do we
    seed: int | None = None
    presence_penalty: float | None = None  # OpenAI's −2…2; the engine's presence_penalty input
    frequency_penalty: float | None = None
    min_tokens: int | None = None  # not in OpenAI's API; vLLM's name, the engine's min_tokens input
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    user: str | None = None

    def sampling(self) -> dict[str, float | int]:
        """The sampling settings the client set, by their OpenAI names (each protocol renames them
        to its model's inputs)."""
        settings = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "min_tokens": self.min_tokens,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        return {name: value for name, value in settings.items() if value is not None}


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def _number(
    body: dict[str, Any], name: str, low: float, high: float, *, open_low: bool = False
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{name}' must be a number", name)
    above_low = value > low if open_low else value >= low
    if not (math.isfinite(value) and above_low and value <= high):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise _bad(f"'{name}' must be in {interval}, got {value!r}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 4.0 is an integer to JSON Schema (and to OpenAI's own validation)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{name}' must be an integer", name)
    if not low <= value <= high:
        raise _bad(f"'{name}' must be between {low} and {high}, got {value}", name)
    return value


def _boolean(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be a boolean (true or false)", name)
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"'{name}' must be a string", name)
    if len(value) > MAX_TEXT_FIELD_CHARS:
        raise _bad(f"'{name}' is longer than {MAX_TEXT_FIELD_CHARS} characters", name)
    return value


@dataclass(frozen=True)
class _Unsupported:
    """An OpenAI field the router cannot honour: refused unless its value is ``neutral``."""

    name: str
    why: str
    neutral: Callable[[Any], bool]
    chat: bool = True
    completions: bool = True


def _absent(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (list, dict)) and not value)


UNSUPPORTED_FIELDS: tuple[_Unsupported, ...] = (
    _Unsupported("n", "one choice per request; send n=1", lambda v: v is None or (v == 1 and v is not True)),
    _Unsupported(
        "best_of", "one candidate per request", lambda v: v is None or (v == 1 and v is not True), chat=False
    ),
    _Unsupported(
        "echo", "the prompt is not repeated in the answer", lambda v: v is None or v is False, chat=False
    ),
    _Unsupported("suffix", "no insertion (fill-in-the-middle)", lambda v: v is None or v == "", chat=False),
    _Unsupported("logprobs", "no log probabilities are returned", lambda v: v is None or v is False),
    _Unsupported(
        "top_logprobs",
        "no log probabilities are returned",
        lambda v: v is None or (v == 0 and v is not False),
        completions=False,
    ),
    _Unsupported("logit_bias", "no logit bias", _empty),
    _Unsupported("tools", "no tool calling", _empty, completions=False),
    _Unsupported("tool_choice", "no tool calling", lambda v: v is None or v == "none", completions=False),
    _Unsupported("functions", "no function calling", _empty, completions=False),
    _Unsupported(
        "function_call", "no function calling", lambda v: v is None or v == "none", completions=False
    ),
    _Unsupported(
        "response_format",
        'no structured output; only {"type": "text"}',
        lambda v: v is None or v == {"type": "text"},
        completions=False,
    ),
    _Unsupported("audio", "text output only", _absent, completions=False),
    _Unsupported("modalities", "text output only", lambda v: v is None or v == ["text"], completions=False),
    _Unsupported("prediction", "no predicted outputs", _absent, completions=False),
    _Unsupported("web_search_options", "no web search", _absent, completions=False),
    _Unsupported("reasoning_effort", "no reasoning controls", _absent, completions=False),
    _Unsupported("verbosity", "no verbosity control", _absent, completions=False),
)


def _refuse_unsupported(body: dict[str, Any], chat: bool) -> None:
    for item in UNSUPPORTED_FIELDS:
        if (
            (item.chat if chat else item.completions)
            and item.name in body
            and not item.neutral(body[item.name])
        ):
            raise _bad(f"'{item.name}' is not supported by this router ({item.why})", item.name)


def _content(i: int, message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text is served
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _bad(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise _bad(f"messages[{i}].content must be a string or text parts", f"messages[{i}].content")
    return content


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad("'messages' must be a non-empty array", "messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a string 'role'", f"messages[{i}]")
        role = message["role"]
        if role not in CHAT_ROLES:
            shown = role if len(role) <= 32 else role[:32] + "..."
            raise _bad(
                f"messages[{i}].role {shown!r} is not supported; use one of {', '.join(CHAT_ROLES)}",
                f"messages[{i}].role",
            )
        if message.get("tool_calls") or message.get("function_call"):
            raise _bad(f"messages[{i}]: tool and function calls are not supported", f"messages[{i}]")
        out.append({"role": role, "content": _content(i, message)})
    return out


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        raise _bad("'prompt' as token ids is not supported; send the text", "prompt")
    if not isinstance(prompt, str):
        raise _bad("'prompt' must be a string (one prompt per request)", "prompt")
    return prompt


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise _bad(f"'stop' must be a string or up to {MAX_STOP_SEQUENCES} non-empty strings", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise _bad(f"'stop': each stop sequence may hold at most {MAX_STOP_CHARS} characters", "stop")
    return stop


def _other_fields(body: dict[str, Any]) -> None:
    """Fields the router accepts without acting on them: still of the type OpenAI documents."""
    for name in ("store", "parallel_tool_calls"):
        _boolean(body, name)
    for name in ("service_tier", "prompt_cache_key", "safety_identifier"):
        _text(body, name)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("'metadata' must be an object", "metadata")


def parse_request(raw: bytes, chat: bool) -> OpenAIRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model")
    _text(body, "model")
    request = OpenAIRequest(chat=chat, model=model)
    if chat:
        request.messages = _messages(body.get("messages"))
        newer = _integer(body, "max_completion_tokens", 1, INT32_MAX)  # OpenAI's current name
        older = _integer(body, "max_tokens", 1, INT32_MAX)
        request.max_tokens = newer if newer is not None else older
    else:
        request.prompt = _prompt(body)
        request.max_tokens = _integer(body, "max_tokens", 1, INT32_MAX)
    request.temperature = _number(body, "temperature", 0.0, 2.0)
    request.top_p = _number(body, "top_p", 0.0, 1.0, open_low=True)
    request.top_k = _integer(body, "top_k", 0, INT32_MAX)
    request.seed = _integer(body, "seed", 0, UINT64_MAX)
    # Penalties reach the engine on every path (its presence_penalty/frequency_penalty inputs, the
    # BLS and ensemble inputs of the same names, the LLM-API model's sampling_param_*). Zero is
    # OpenAI's default and the engine's "off": it is not sent.
    request.presence_penalty = _number(body, "presence_penalty", -2.0, 2.0) or None
    request.frequency_penalty = _number(body, "frequency_penalty", -2.0, 2.0) or None
    request.min_tokens = _integer(body, "min_tokens", 0, INT32_MAX) or None
    _refuse_unsupported(body, chat)
    request.stop = _stop(body)
    request.stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise _bad("'stream_options' must be an object with a boolean 'include_usage'", "stream_options")
        request.include_usage = bool(options.get("include_usage"))
    request.user = _text(body, "user")
    _other_fields(body)
    return request


class Shaper:
    """Builds the response objects of one request (ids, object names differ for chat/completions)."""

    def __init__(self, request: OpenAIRequest, request_id: str, created: int) -> None:
        self.chat = request.chat
        self.model = request.model
        self.id = ("chatcmpl-" if request.chat else "cmpl-") + request_id
        self.created = created
        self._sent_role = False
        self._usage_key = request.include_usage
        # Every token event is the same bytes around the text: build them once per request.
        marker = "\u0000TEXT\u0000"
        template = sse(self.chunk(marker, with_usage_key=request.include_usage, _role=False))
        self._prefix, self._suffix = template.split(orjson.dumps(marker))

    def text_event(self, text: str) -> bytes:
        """The SSE event carrying one piece of streamed text."""
        if self.chat and not self._sent_role:
            return sse(self.chunk(text, with_usage_key=self._usage_key))
        return self._prefix + orjson.dumps(text) + self._suffix

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(
        self, text: str, finish_reason: str | None = None, with_usage_key: bool = False, _role: bool = True
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"content": text} if text or finish_reason is None else {}
            if _role and not self._sent_role:
                delta = {"role": "assistant", **delta}
                self._sent_role = True
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            out = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            out = self._envelope("text_completion")
        out["choices"] = [choice]
        if with_usage_key:
            out["usage"] = None
        return out

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        out = self._envelope("chat.completion.chunk" if self.chat else "text_completion")
        out["choices"] = []
        out["usage"] = usage
        return out

    def complete(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            out = self._envelope("chat.completion")
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            out = self._envelope("text_completion")
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        out["choices"] = [choice]
        out["usage"] = usage
        return out
