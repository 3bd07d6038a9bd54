"""The spec's ``router:`` section: how the OpenAI-compatible front door behaves.

Every timeout and limit the router uses lives here (and is copied into ``routes.yaml``), so no
runtime module carries a literal. Defaults suit one node; the comments say why each exists.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from generator.spec.base import Closed, Port

__all__ = [
    "COMPLETIONS_DEFAULT_MAX_TOKENS",
    "GRPC_KEEPALIVE_TIME_MS",
    "GRPC_MAX_MESSAGE_BYTES",
    "GRPC_RECONNECT_BACKOFF_MS",
    "DataPath",
    "Policy",
    "RouterSettings",
]

Policy = Literal["least_inflight", "round_robin", "session_affinity", "prefix_aware"]
DataPath = Literal["engine", "bls", "ensemble"]
Seconds = Annotated[float, Field(gt=0)]

# Fixed values the router uses that are not spec fields: every field of RouterSettings is copied
# into routes.yaml, so a new field would change every rendered file. Named here, next to the
# settings, so no runtime module carries a bare literal.

# OpenAI's /v1/completions answers at most 16 tokens when max_tokens is absent (chat has no such
# default: the model's limit applies), https://platform.openai.com/docs/api-reference/completions/create
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# gRPC channel to Triton: messages up to 64 MiB each way (gRPC's default receive limit is 4 MiB,
# too small for long prompts' tensors); a keepalive ping every 30 s keeps an idle stream's
# connection known to be alive through NAT and load balancers
# (https://github.com/grpc/grpc/blob/master/doc/keepalive.md).
GRPC_MAX_MESSAGE_BYTES = 64 << 20
GRPC_KEEPALIVE_TIME_MS = 30_000
# Reconnect back-off (initial, max): fail fast when a replica is gone instead of waiting out gRPC's
# default back-off (1 s growing to 120 s), https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md
GRPC_RECONNECT_BACKOFF_MS = (200, 1000)


class RouterSettings(Closed):
    bind: str = Field(
        default="127.0.0.1", description="Listen address; loopback unless you mean to expose it"
    )
    port: Port = 9000
    workers: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1,
        description="Router processes sharing the port (SO_REUSEPORT); one event loop caps a few k req/s",
    )
    policy: Policy = "least_inflight"
    upstream: Literal["http", "grpc"] = Field(
        default="http",
        description="How the router talks to Triton: HTTP generate_stream (half the router CPU per token, "
        "measured in benchmarks/router_overhead.py) or the gRPC stream",
    )
    data_path: DataPath = Field(
        default="engine",
        description="Which Triton model the router calls for engine-set models: engine (the tensorrt_llm model "
        "with token ids; the router tokenizes and detokenizes, no Python model on Triton's hot path), bls "
        "(our BLS, text in and out) or ensemble (the ensemble); LLM-API models always get their own model",
    )
    # Session affinity: header first, then the OpenAI `user` field.
    session_header: str = "x-session-id"
    affinity_load_factor: Annotated[float, Field(ge=1.0)] = Field(
        default=1.25,
        description="Bounded-load consistent hashing: a replica takes at most factor × average load",
    )
    # Approximate prefix-aware routing.
    prefix_block_tokens: Annotated[int, Field(ge=1)] = 16
    prefix_cache_blocks: Annotated[int, Field(ge=16)] = Field(
        default=65536, description="Bounded memory: LRU of remembered prompt-prefix blocks per model"
    )
    prefix_load_slack: Annotated[int, Field(ge=0)] = Field(
        default=4,
        description="Load guard: prefer a cache hit only while its replica has at most this many more in flight",
    )
    # Admission control.
    max_inflight_per_replica: Annotated[int, Field(ge=1)] = 64
    max_queue: Annotated[int, Field(ge=0)] = Field(
        default=256, description="Requests waiting for a slot before 429"
    )
    queue_timeout_s: Seconds = Field(default=5.0, description="Longest wait for a slot before 503")
    retry_after_s: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Retry-After (seconds) of every 429/503 the router answers itself"
    )
    # Deadlines.
    connect_timeout_s: Seconds = 2.0
    first_token_timeout_s: Seconds = Field(
        default=60.0,
        description="From dispatch to the first upstream response; past it the attempt counts as a "
        "replica failure and, within max_retries, the request goes to another replica",
    )
    token_timeout_s: Seconds = Field(default=30.0, description="Longest gap between two upstream responses")
    request_timeout_s: Seconds = Field(default=600.0, description="Whole request, all phases")
    prefill_timeout_s: Seconds = Field(default=60.0, description="Disaggregated context phase")
    # Client connections (the HTTP server): every phase has a deadline, so slow clients cannot hold
    # connections forever; request_timeout_s above also bounds a request from its first byte.
    client_keep_alive_s: Seconds = Field(
        default=5.0, description="An idle keep-alive client connection is closed after this long"
    )
    client_head_timeout_s: Seconds = Field(
        default=10.0, description="From a request's first byte to the end of its headers; slower gets 408"
    )
    client_body_timeout_s: Seconds = Field(
        default=30.0,
        description="From the end of a request's headers to the end of its body; slower gets 408",
    )
    max_connections: Annotated[int, Field(ge=1)] = Field(
        default=4096,
        description="Open client connections per router process; at the cap the one waiting longest on "
        "its client is answered 503 and closed, or the new one when every connection is busy",
    )
    # Resilience.
    max_retries: Annotated[int, Field(ge=0, le=8)] = Field(
        default=2,
        description="Other replicas tried when one fails a request: before the first byte on a transport "
        "failure or silence, and on the engine path also midway (the stream goes on from the tokens streamed)",
    )
    eject_after_failures: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Transport failures or timeouts in a row that eject a replica"
    )
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] = Field(
        default=50,
        description="At most this share of a pool's replicas ejected at once (one always may be), as in "
        "Envoy's outlier detection: past it a failing replica keeps its traffic, so no burst of errors "
        "takes a whole pool out",
    )
    ejection_s: Seconds = Field(
        default=5.0,
        description="Least time an ejected replica stays out, doubled for each ejection in a row (at most "
        "8×); it comes back only once it is also ready",
    )
    health_interval_s: Seconds = 1.0
    load_scrape_interval_s: Seconds = Field(
        default=2.0, description="Triton /metrics scrape for load correction"
    )
    dns_refresh_s: Seconds = 10.0
    drain_timeout_s: Seconds = Field(
        default=30.0, description="SIGTERM: finish in-flight requests for this long"
    )
    # Security.
    api_keys_env: str | None = Field(
        default=None, description="Environment variable holding comma-separated keys"
    )
    api_keys_file: str | None = Field(default=None, description="File with one API key per line")
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    prompt_bytes_per_token: Annotated[int, Field(ge=4)] = Field(
        default=16,
        description="A prompt over max_input_len × this many UTF-8 bytes is refused before any tokenizing "
        "(real text averages 3-5 bytes per token)",
    )
