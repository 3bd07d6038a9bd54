"""One streaming request against an OpenAI-compatible endpoint, timed and classified.

Works with anything that speaks the OpenAI HTTP API with server-sent events: our router,
trtllm-serve, NIM, vLLM, SGLang. Requests are greedy (temperature 0) with a fixed ``max_tokens``
and ask for usage in the stream (``stream_options.include_usage``), so token counts come from the
server where it supports that.

Failures are never raised to the runner: every way a request can end is recorded on its
:class:`RequestRecord` (see ``records.ErrorKind``), so a benchmark reports errors instead of
silently dropping them. httpx exceptions are translated here, at this one boundary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from generator.bench.records import ErrorKind, RequestRecord
from generator.bench.settings import ApiKind, Endpoint, Timeouts
from generator.bench.workload import Prompt

__all__ = ["RequestOptions", "StreamingClient", "http_client"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class RequestOptions:
    api: ApiKind
    max_tokens: int
    ignore_eos: bool
    seed: int
    api_key: str | None
    timeouts: Timeouts


def http_client(timeouts: Timeouts, max_connections: int) -> httpx.AsyncClient:
    """An httpx client whose read timeout is the stall timeout (a gap between bytes, not a total)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=timeouts.connect_s, read=timeouts.stall_s, write=timeouts.connect_s, pool=timeouts.request_s
        ),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


class _Failed(Exception):
    """Internal: ends a request early with an error kind for its record."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class StreamingClient:
    """Sends one request per call and returns its record; holds no state between calls."""

    def __init__(self, http: httpx.AsyncClient, options: RequestOptions, clock: Clock) -> None:
        self._http = http
        self._options = options
        self._clock = clock

    def body(self, model: str, prompt: Prompt) -> dict[str, Any]:
        options = self._options
        body: dict[str, Any] = {"model": model}
        if options.api == "chat":
            body["messages"] = prompt.as_messages()
        else:
            body["prompt"] = prompt.text or ""
        body.update(
            max_tokens=options.max_tokens,
            temperature=0.0,
            seed=options.seed,
            stream=True,
            stream_options={"include_usage": True},
        )
        if options.ignore_eos:
            body["ignore_eos"] = True
        return body

    async def send(self, endpoint: Endpoint, prompt: Prompt, index: int, prompt_index: int) -> RequestRecord:
        record = RequestRecord(index=index, prompt_index=prompt_index, sent_at=self._clock())
        try:
            await asyncio.wait_for(self._stream(endpoint, prompt, record), timeout=self._options.timeouts.request_s)
        except _Failed as failure:
            record.error, record.error_detail = failure.kind, failure.detail
        except TimeoutError:
            record.error = "deadline"
            record.error_detail = f"not finished within the request timeout of {self._options.timeouts.request_s:g} s"
        except httpx.ConnectError as exc:
            record.error, record.error_detail = "connect", f"cannot connect: {exc}"
        except httpx.ConnectTimeout:
            record.error, record.error_detail = "connect", "connect timed out"
        except httpx.PoolTimeout:
            record.error, record.error_detail = "deadline", "waited too long for a free connection"
        except httpx.ReadTimeout:
            record.error = "stall"
            record.error_detail = f"no data for {self._options.timeouts.stall_s:g} s while the stream was open"
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            record.error, record.error_detail = "closed_mid_stream", f"connection closed: {exc}"
        except httpx.HTTPError as exc:
            record.error, record.error_detail = "closed_mid_stream", f"{type(exc).__name__}: {exc}"
        record.ended_at = self._clock()
        if record.ok and not record.content_times:
            record.error = "empty_output"
            record.error_detail = "the stream completed without any non-empty content"
        return record

    async def _stream(self, endpoint: Endpoint, prompt: Prompt, record: RequestRecord) -> None:
        headers = {"Accept": "text/event-stream"}
        if self._options.api_key:
            headers["Authorization"] = f"Bearer {self._options.api_key}"
        url = endpoint.url(self._options.api)
        body = self.body(endpoint.model, prompt)
        async with self._http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                detail = (await response.aread()).decode("utf-8", "replace").strip()
                raise _Failed("http_status", f"HTTP {response.status_code}: {detail[:300]}")
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise _Failed(
                    "stream_error",
                    f"answered with content-type {content_type or 'none'!r}, not an event stream; "
                    "does this endpoint support stream=true?",
                )
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments, event names and the blank separators
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    done = True
                    break
                self._take_chunk(payload, record)
            if not done and record.finish_reason is None:
                raise _Failed("closed_mid_stream", "the stream ended before a finish_reason or [DONE]")

    def _take_chunk(self, payload: str, record: RequestRecord) -> None:
        arrived = self._clock()
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise _Failed("stream_error", f"not a JSON chunk: {payload[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise _Failed("stream_error", f"not a JSON object: {payload[:200]!r}")
        if "error" in chunk:
            raise _Failed("stream_error", f"error in stream: {json.dumps(chunk['error'])[:300]}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                record.usage_completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                record.usage_prompt_tokens = usage["prompt_tokens"]
        for choice in chunk.get("choices") or []:
            content = _content(choice, self._options.api)
            if content:
                record.content_times.append(arrived)
                record.text += content
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]


def _content(choice: dict[str, Any], api: ApiKind) -> str:
    if api == "chat":
        delta = choice.get("delta") or {}
        content = delta.get("content")
    else:
        content = choice.get("text")
    return content if isinstance(content, str) else ""
