"""The OpenAI wire format: parsing requests into :class:`OpenAIRequest` (every mistake becomes an
:class:`ApiError` with the status and shape OpenAI clients expect) and shaping responses/chunks.
Only the fields the router acts on are read; others are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ApiError", "OpenAIRequest", "Shaper", "error_body", "parse_request", "sse"]


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
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{name}' must be a number", name)
    if not low <= value <= high:
        raise _bad(f"'{name}' must be between {low} and {high}, got {value}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{name}' must be an integer", name)
    if value < low:
        raise _bad(f"'{name}' must be at least {low}, got {value}", name)
    return value


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad("'messages' must be a non-empty array", "messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a string 'role'", f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text is served
            texts = []
            for part in content:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise _bad(
                        f"messages[{i}].content: only text parts are supported", f"messages[{i}].content"
                    )
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string or text parts", f"messages[{i}].content")
        out.append({"role": message["role"], "content": content})
    return out


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
    request = OpenAIRequest(chat=chat, model=model)
    if chat:
        request.messages = _messages(body.get("messages"))
        request.max_tokens = _integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _bad("'prompt' must be a string (one prompt per request)", "prompt")
        request.prompt = prompt
        request.max_tokens = _integer(body, "max_tokens", 1)
    request.temperature = _number(body, "temperature", 0.0, 2.0)
    request.top_p = _number(body, "top_p", 0.0, 1.0)
    request.top_k = _integer(body, "top_k", 0)
    request.seed = _integer(body, "seed", 0)
    n = _integer(body, "n", 1)
    if n not in (None, 1):
        raise _bad("only n=1 is supported", "n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4
    ):
        raise _bad("'stop' must be a string or up to 4 non-empty strings", "stop")
    request.stop = stop or []
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    request.stream = stream
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise _bad("'stream_options' must be an object with a boolean 'include_usage'", "stream_options")
        request.include_usage = bool(options.get("include_usage"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("'user' must be a string", "user")
    request.user = user
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
