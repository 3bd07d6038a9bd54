"""What one benchmark run is asked to do: stacks, workload, load model and limits.

Everything the runner, client and report need is held here, parsed once from the command line, so
the JSON result can record the exact settings a figure was measured with. Defaults live on the
fields. Parsing helpers turn user mistakes into :class:`BenchError` messages that say which option
was wrong and what a valid value looks like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from generator.errors import TritonstackError

__all__ = [
    "BenchError",
    "Endpoint",
    "LoadPoint",
    "Timeouts",
    "BenchSettings",
    "parse_endpoints",
    "parse_models",
    "parse_concurrency",
    "parse_rates",
]

ApiKind = Literal["chat", "completions"]


class BenchError(TritonstackError):
    """A benchmark cannot run as asked (bad options, unreadable dataset, unreachable endpoint)."""


@dataclass(frozen=True)
class Endpoint:
    """One stack under test: a name for the tables and an OpenAI-compatible base URL."""

    name: str
    base_url: str  # scheme://host:port[/prefix], without a trailing "/v1"
    model: str

    def url(self, api: ApiKind) -> str:
        path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
        return self.base_url.rstrip("/") + path


@dataclass(frozen=True)
class LoadPoint:
    """One measured level: a fixed number of closed-loop clients, or an open-loop Poisson rate."""

    kind: Literal["serial", "concurrency", "rate"]
    value: float  # clients for serial/concurrency (serial is 1), requests per second for rate

    @property
    def label(self) -> str:
        if self.kind == "serial":
            return "serial"
        if self.kind == "concurrency":
            return f"c={int(self.value)}"
        return f"rate={self.value:g}/s"


@dataclass(frozen=True)
class Timeouts:
    """Client-side limits; a request that exceeds one is counted as an error of that kind."""

    connect_s: float = 10.0
    # No byte for this long while a stream is open: the server stalled.
    stall_s: float = 60.0
    # Whole-request deadline, from sending to the end of the stream.
    request_s: float = 600.0


@dataclass(frozen=True)
class BenchSettings:
    """The complete description of a benchmark, recorded verbatim in the JSON result."""

    endpoints: tuple[Endpoint, ...]
    api: ApiKind = "chat"
    prompt: str = "Explain how a paged KV cache lets an inference server batch requests of different lengths."
    dataset: Path | None = None
    max_tokens: int = 200
    # Asks servers that support it (vLLM, trtllm-serve, NIM) to keep decoding past EOS, so every
    # request produces exactly max_tokens and stacks are compared on the same output length.
    ignore_eos: bool = False
    warmup_requests: int = 2
    serial_requests: int = 10
    load_points: tuple[LoadPoint, ...] = (
        LoadPoint("concurrency", 1),
        LoadPoint("concurrency", 2),
        LoadPoint("concurrency", 4),
        LoadPoint("concurrency", 8),
    )
    requests_per_point: int = 16
    seed: int = 0
    baseline: str | None = None
    tokenizer_dir: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    timeouts: Timeouts = Timeouts()

    def endpoint(self, name: str) -> Endpoint:
        return next(e for e in self.endpoints if e.name == name)

    def recorded(self) -> dict[str, object]:
        """The settings as they go into the JSON result (the API key only as used / not used)."""
        return {
            "endpoints": [{"name": e.name, "base_url": e.base_url, "model": e.model} for e in self.endpoints],
            "api": self.api,
            "prompt": None if self.dataset is not None else self.prompt,
            "dataset": None if self.dataset is None else str(self.dataset),
            "max_tokens": self.max_tokens,
            "ignore_eos": self.ignore_eos,
            "sampling": {"temperature": 0.0, "note": "greedy decoding"},
            "warmup_requests": self.warmup_requests,
            "serial_requests": self.serial_requests,
            "load_points": [{"kind": p.kind, "value": p.value} for p in self.load_points],
            "requests_per_point": self.requests_per_point,
            "seed": self.seed,
            "baseline": self.baseline,
            "tokenizer_dir": None if self.tokenizer_dir is None else str(self.tokenizer_dir),
            "api_key": self.api_key is not None,
            "timeouts_s": {
                "connect": self.timeouts.connect_s,
                "stall": self.timeouts.stall_s,
                "request": self.timeouts.request_s,
            },
        }


def parse_endpoints(values: list[str]) -> list[tuple[str, str]]:
    """``NAME=URL`` pairs; names must be unique, URLs http(s) with a host."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise BenchError(f"--endpoint {value!r}: write NAME=URL, e.g. nim=http://host:8000")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BenchError(f"--endpoint {value!r}: {url!r} is not an http(s) URL with a host")
        base = url.rstrip("/")
        # Accept both ".../v1" and the bare server URL: users copy either from server docs.
        base = base.removesuffix("/v1")
        if name in (n for n, _ in pairs):
            raise BenchError(f"--endpoint {value!r}: the name {name!r} is used twice; names label the tables")
        pairs.append((name, base))
    if not pairs:
        raise BenchError("give at least one --endpoint NAME=URL")
    return pairs


def parse_models(values: list[str], endpoint_names: list[str]) -> dict[str, str]:
    """``--model M`` for every stack, and/or ``--model STACK=M`` for one; returns stack → model."""
    default: str | None = None
    per_stack: dict[str, str] = {}
    for value in values:
        stack, sep, model = value.partition("=")
        if not sep:
            if default is not None:
                raise BenchError(f"--model {value!r}: a model for every stack is already given ({default!r})")
            default = value
            continue
        if stack not in endpoint_names:
            raise BenchError(f"--model {value!r}: no --endpoint named {stack!r}; endpoints are {endpoint_names}")
        if not model:
            raise BenchError(f"--model {value!r}: the model name after '=' is empty")
        per_stack[stack] = model
    models: dict[str, str] = {}
    for name in endpoint_names:
        model = per_stack.get(name, default)
        if model is None:
            raise BenchError(f"no model for endpoint {name!r}: give --model NAME or --model {name}=NAME")
        models[name] = model
    return models


def parse_concurrency(text: str) -> list[LoadPoint]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--concurrency {text!r}: write whole numbers separated by commas, e.g. 1,2,4,8") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"--concurrency {text!r}: every level must be 1 or more")
    return [LoadPoint("concurrency", v) for v in values]


def parse_rates(text: str) -> list[LoadPoint]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--request-rate {text!r}: write requests per second separated by commas, e.g. 0.5,1,2") from None
    if not values or any(not v > 0 for v in values):
        raise BenchError(f"--request-rate {text!r}: every rate must be above 0 requests per second")
    return [LoadPoint("rate", v) for v in values]
