"""``routes.yaml``: what the router serves and where, as the generator renders it.

The file is self-describing: models → how each is served (one aggregated pool, or a prefill +
decode pair, with the Triton model names to call and the tensor contract they speak) → pools → replica endpoints (static hosts, or a
DNS name such as a Kubernetes headless Service that resolves to every replica).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, model_validator

from generator.config_file import parse_config_text, read_config_text
from generator.spec.base import TRITON_PORTS, Closed, Port, PositiveInt
from generator.spec.router import RouterSettings

__all__ = [
    "ROUTES_API_VERSION",
    "Aggregated",
    "Disaggregated",
    "DnsEndpoints",
    "Endpoint",
    "ModelRoute",
    "Phase",
    "PoolRoute",
    "Protocol",
    "Routes",
    "load_routes",
    "parse_routes",
]

ROUTES_API_VERSION: Final = "tritonstack/routes-v1"

# The tensor contract the router speaks to a route's Triton model(s). A file without the field
# predates the others and meant the ensemble contract.
Protocol = Literal["engine", "ensemble", "llmapi"]


class Endpoint(Closed):
    """One tritonserver replica."""

    host: str
    http: Port
    grpc: Port
    metrics: Port


class DnsEndpoints(Closed):
    """A name that resolves to every replica (every address gets the same ports)."""

    name: str
    http: Port = TRITON_PORTS.http
    grpc: Port = TRITON_PORTS.grpc
    metrics: Port = TRITON_PORTS.metrics


class PoolRoute(Closed):
    role: Literal["aggregated", "prefill", "decode"]
    endpoints: list[Endpoint] = Field(default_factory=list)
    dns: DnsEndpoints | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PoolRoute:
        if bool(self.endpoints) == (self.dns is not None):
            raise ValueError(
                "give exactly one of endpoints (static replicas) or dns (a name resolving to them)"
            )
        return self


class Phase(Closed):
    pool: str
    triton_model: str


class Aggregated(Closed):
    kind: Literal["aggregated"] = "aggregated"
    pool: str
    triton_model: str
    protocol: Protocol = Field(
        default="ensemble",
        description="Tensor contract of triton_model: engine (the tensorrt_llm model: input_ids in, output_ids "
        "out; the router tokenizes and detokenizes), ensemble (our BLS/ensemble: text_input, max_tokens, "
        "stream, ...) or llmapi (the LLM-API model: text_input, streaming, sampling_param_*, cumulative "
        "text_output and finish_reason)",
    )


class Disaggregated(Closed):
    kind: Literal["disaggregated"] = "disaggregated"
    prefill: Phase
    decode: Phase
    protocol: Protocol = Field(
        default="ensemble",
        description="Tensor contract of both phases: engine (the context and generation tensorrt_llm models, "
        "token ids, the hand-over in context_phase_params), ensemble (our prefill ensemble and decode BLS, the "
        "hand-over in context_phase_params) or llmapi (tritonstack's LLM-API model, the hand-over in "
        "disaggregated_params)",
    )


class ModelRoute(Closed):
    tokenizer_dir: str
    max_input_len: PositiveInt
    max_output_len: PositiveInt
    chat: bool = True
    streaming: bool = True
    add_special_tokens: bool = True
    # Input/output names differ by Triton release (see catalogs/triton_releases.yaml).
    seed_input: Literal["seed", "random_seed"] = "seed"
    token_count_outputs: bool = Field(
        default=True, description="The target returns num_input_tokens/num_output_tokens (>= 25.06)"
    )
    serving: Annotated[Aggregated | Disaggregated, Field(discriminator="kind")]


class Routes(Closed):
    api_version: Literal["tritonstack/routes-v1"] = Field(alias="apiVersion")
    router: RouterSettings = RouterSettings()
    models: dict[str, ModelRoute]
    pools: dict[str, PoolRoute]

    model_config = Closed.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _pools_exist(self) -> Routes:
        for name, model in self.models.items():
            serving = model.serving
            phases = (
                [("aggregated", serving.pool)]
                if isinstance(serving, Aggregated)
                else [("prefill", serving.prefill.pool), ("decode", serving.decode.pool)]
            )
            for role, pool in phases:
                if pool not in self.pools:
                    raise ValueError(
                        f"models.{name}: pool {pool!r} is not under pools ({sorted(self.pools)})"
                    )
                if self.pools[pool].role != role:
                    raise ValueError(
                        f"models.{name}: pool {pool!r} has role {self.pools[pool].role}, needs {role}"
                    )
        return self


def parse_routes(text: str, where: str = "routes.yaml") -> Routes:
    """Validate routes text; every problem becomes a :class:`RuntimeSetupError` naming the field."""
    what = "a routes file; render one with `tritonstack render`"
    return parse_config_text(text, where, Routes, ROUTES_API_VERSION, what)


def load_routes(path: Path) -> Routes:
    routes = parse_routes(read_config_text(path, "router config"), str(path))
    # Relative tokenizer directories are relative to routes.yaml, so a rendered tree can move.
    base = path.resolve().parent
    models = {
        name: model.model_copy(update={"tokenizer_dir": str(base / model.tokenizer_dir)})
        if not Path(model.tokenizer_dir).is_absolute()
        else model
        for name, model in routes.models.items()
    }
    return routes.model_copy(update={"models": models})
