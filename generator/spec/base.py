"""Shared pieces of the spec models: the closed base class and the safe-name types."""

from __future__ import annotations

import re
from typing import Annotated, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "TRITON_PORTS",
    "Closed",
    "ModelName",
    "PathText",
    "PoolName",
    "PositiveInt",
    "Port",
    "TritonPortNumbers",
]

# Model names become directory names and the prefix of Triton model names ("<model>_ensemble"),
# so "_" is kept out of them: the first "_" of a Triton model name always ends the spec model name.
MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,46}[a-z0-9])?$")
# Pool names also become Kubernetes object names (DNS-1123 labels, with room for suffixes).
POOL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
RESERVED_MODEL_NAMES = frozenset(
    {"ensemble", "preprocessing", "postprocessing", "tensorrt_llm", "bls", "router", "exporter"}
)
RESERVED_POOL_NAMES = frozenset({"router", "exporter", "prometheus", "grafana", "monitoring"})


class TritonPortNumbers(NamedTuple):
    http: int
    grpc: int
    metrics: int


# tritonserver's own defaults (--http-port, --grpc-port, --metrics-port); the spec's
# deploy.triton_ports, the router's and the exporter's DNS endpoints default to them.
TRITON_PORTS = TritonPortNumbers(http=8000, grpc=8001, metrics=8002)


class Closed(BaseModel):
    """Unknown fields are errors, values are not coerced, and parsed specs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _model_name(value: str) -> str:
    if not MODEL_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{value!r} is not a valid model name: use 1-48 lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit (e.g. 'llama-3.1-8b')"
        )
    if value in RESERVED_MODEL_NAMES:
        raise ValueError(f"{value!r} is reserved; choose another model name")
    return value


def _pool_name(value: str) -> str:
    if not POOL_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-40 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'chat' or 'prefill-a')"
        )
    if value in RESERVED_POOL_NAMES:
        raise ValueError(f"{value!r} is reserved; choose another name")
    return value


def _path_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if any(ch in value for ch in "\x00\n\r"):
        raise ValueError("must be a single-line path")
    return value


ModelName = Annotated[str, AfterValidator(_model_name)]
PoolName = Annotated[str, AfterValidator(_pool_name)]
PathText = Annotated[str, AfterValidator(_path_text)]
PositiveInt = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
