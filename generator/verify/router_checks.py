"""OpenAI requests through the router: chat and completions, streamed and not, usage, stop strings,
and a client that goes away mid-stream (closing the connection is how OpenAI clients cancel).

Requests are greedy (``temperature: 0``) with a fixed seed, so a streamed answer must equal the
whole one and a stop string taken from an answer must end the same request there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from generator.verify.report import CheckResult, failed, passed

__all__ = ["RouterTarget", "router_checks"]

PROMPT = "Tell me how Triton serves a model."
MAX_TOKENS = 12
LONG_MAX_TOKENS = 400
DISCONNECTS = "tritonstack_router_client_disconnects_total"


@dataclass(frozen=True)
class RouterTarget:
    url: str  # http://host:port, without /v1
    api_key: str | None = None
    timeout_s: float = 60.0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class _Failed(Exception):
    """One check's failure, with what to report."""


def router_checks(router: RouterTarget, models: list[str], streaming: frozenset[str] | None = None) -> list[CheckResult]:
    """``GET /v1/models``, then every check for each spec model. Closing a stream mid-way is checked
    on the models in ``streaming`` (all, when None): a model served without streaming answers in one
    piece, so there is nothing to cancel."""
    results = [_models_listed(router, models)]
    if not results[0].passed and results[0].detail.startswith("cannot reach"):
        return results
    for model in models:
        checks = [
            ("router/completions", _completions),
            ("router/chat", _chat),
            ("router/stop-string", _stop_string),
        ]
        if streaming is None or model in streaming:
            checks.append(("router/cancel", _cancel))
        for name, check in checks:
            try:
                results.append(passed(name, model, check(router, model)))
            except _Failed as exc:
                results.append(failed(name, model, str(exc)))
            except httpx.HTTPError as exc:
                results.append(failed(name, model, f"{type(exc).__name__}: {exc}"))
    return results


def _models_listed(router: RouterTarget, models: list[str]) -> CheckResult:
    try:
        response = httpx.get(f"{router.url}/v1/models", headers=router.headers(), timeout=router.timeout_s)
    except httpx.HTTPError as exc:
        return failed("router/models", router.url, f"cannot reach the router: {type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return failed("router/models", router.url, f"HTTP {response.status_code}: {response.text[:200]}")
    listed = {m.get("id") for m in response.json().get("data", [])}
    missing = sorted(set(models) - listed)
    if missing:
        return failed("router/models", router.url, f"not listed: {', '.join(missing)}")
    return passed("router/models", router.url, ", ".join(sorted(listed)))


def _post(router: RouterTarget, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{router.url}{path}", json=body, headers=router.headers(), timeout=router.timeout_s
    )
    if response.status_code != 200:
        raise _Failed(f"{path}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


def _stream(router: RouterTarget, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks = []
    with httpx.stream(
        "POST",
        f"{router.url}{path}",
        json={**body, "stream": True},
        headers=router.headers(),
        timeout=router.timeout_s,
    ) as response:
        if response.status_code != 200:
            response.read()
            raise _Failed(f"{path} (stream): HTTP {response.status_code}: {response.text[:200]}")
        done = False
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = orjson.loads(line.removeprefix("data: "))
                if "error" in chunk:
                    raise _Failed(f"{path} (stream): error event {chunk['error']}")
                chunks.append(chunk)
    if not done:
        raise _Failed(f"{path} (stream): ended without data: [DONE]")
    return chunks


def _usage(usage: dict[str, Any] | None, where: str, max_tokens: int) -> tuple[int, int]:
    if not usage:
        raise _Failed(f"{where}: no usage")
    prompt, completion, total = (usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    if not (
        isinstance(prompt, int)
        and prompt > 0
        and isinstance(completion, int)
        and 0 < completion <= max_tokens
    ):
        raise _Failed(f"{where}: usage {usage} (prompt > 0 and 0 < completion <= {max_tokens} expected)")
    if total != prompt + completion:
        raise _Failed(f"{where}: usage total_tokens {total} != {prompt} + {completion}")
    return prompt, completion


def _greedy(model: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0, "seed": 1}


def _completions(router: RouterTarget, model: str) -> str:
    return _stream_equals_whole(
        router,
        "/v1/completions",
        {**_greedy(model), "prompt": PROMPT},
        "completion",
        whole_text=lambda answer: answer["choices"][0]["text"],
        piece_text=lambda choice: choice.get("text", ""),
    )


def _chat(router: RouterTarget, model: str) -> str:
    return _stream_equals_whole(
        router,
        "/v1/chat/completions",
        {**_greedy(model), "messages": [{"role": "user", "content": PROMPT}]},
        "chat",
        whole_text=lambda answer: answer["choices"][0]["message"]["content"],
        piece_text=lambda choice: choice["delta"].get("content") or "",
    )


def _stream_equals_whole(
    router: RouterTarget,
    path: str,
    body: dict[str, Any],
    what: str,
    *,
    whole_text: Callable[[dict[str, Any]], str],
    piece_text: Callable[[dict[str, Any]], str],
) -> str:
    """The answer, then the same request streamed (with include_usage): same text, same usage."""
    whole = _post(router, path, body)
    text = whole_text(whole)
    if not text:
        raise _Failed(f"empty {what} answer")
    usage = _usage(whole.get("usage"), what, MAX_TOKENS)
    chunks = _stream(router, path, {**body, "stream_options": {"include_usage": True}})
    streamed = "".join(piece_text(c["choices"][0]) for c in chunks if c.get("choices"))
    if streamed != text:
        raise _Failed(f"streamed {streamed!r} != whole {text!r}")
    if _usage(chunks[-1].get("usage"), f"streamed {what} (include_usage)", MAX_TOKENS) != usage:
        raise _Failed(f"streamed usage {chunks[-1].get('usage')} != whole {whole.get('usage')}")
    return f"stream == whole; usage {usage[0]}+{usage[1]}"


def _stop_string(router: RouterTarget, model: str) -> str:
    body = {**_greedy(model, 48), "prompt": PROMPT}
    full = _post(router, "/v1/completions", body)["choices"][0]["text"]
    words = [m.group(0) for m in re.finditer(r" [A-Za-z]{3,}", full)]
    stop = next((w for w in words[len(words) // 2 :] if full.count(w) == 1 and full.index(w) > 0), None)
    if stop is None:
        raise _Failed(f"the answer has no word to stop at: {full!r}")
    choice = _post(router, "/v1/completions", {**body, "stop": [stop]})["choices"][0]
    expected = full[: full.index(stop)]
    if choice["text"] != expected or choice.get("finish_reason") != "stop":
        raise _Failed(
            f"stop {stop!r}: got {choice['text']!r} (finish_reason {choice.get('finish_reason')!r}), "
            f"expected {expected!r} and 'stop'"
        )
    return f"ended before {stop!r}, finish_reason stop"


def _cancel(router: RouterTarget, model: str) -> str:
    """Close a stream after three chunks; the router counts the disconnect, and answers the next."""
    before = _disconnects(router)
    body = {**_greedy(model, LONG_MAX_TOKENS), "prompt": PROMPT, "stream": True}
    chunks = 0
    with httpx.stream(
        "POST", f"{router.url}/v1/completions", json=body, headers=router.headers(), timeout=router.timeout_s
    ) as response:
        if response.status_code != 200:
            response.read()
            raise _Failed(f"HTTP {response.status_code}: {response.text[:200]}")
        for line in response.iter_lines():
            if line == "data: [DONE]":
                raise _Failed("the stream finished before it could be closed; nothing was cancelled")
            chunks += line.startswith("data: {")
            if chunks == 3:
                break
    if before is not None:
        deadline = time.monotonic() + 10
        while (_disconnects(router) or 0) <= before and time.monotonic() < deadline:
            time.sleep(0.2)
        if (_disconnects(router) or 0) <= before:
            raise _Failed(f"{DISCONNECTS} did not move after the client closed its stream")
    _post(router, "/v1/completions", {**_greedy(model), "prompt": PROMPT})
    return "closed after 3 chunks; disconnect counted; next request answered"


def _disconnects(router: RouterTarget) -> float | None:
    """The router's disconnect counter (summed), or None where its /metrics does not have it."""
    try:
        text = httpx.get(f"{router.url}/metrics", headers=router.headers(), timeout=router.timeout_s).text
    except httpx.HTTPError:
        return None
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(DISCONNECTS)]
    return sum(values) if values else (0.0 if f"# TYPE {DISCONNECTS}" in text else None)
