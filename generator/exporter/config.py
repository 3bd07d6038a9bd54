"""``exporter.yaml``: what the exporter scrapes, as the generator renders it.

One entry per pool: the spec models it serves (only their Triton models are exported, which keeps
label values bounded) and where its replicas are: a static list (local runs, with the tritonserver
PID when the exporter runs on the same machine, for process memory) or a DNS name that resolves to
every replica (a Kubernetes headless Service).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from generator.config_file import parse_config_text, read_config_text
from generator.spec.base import TRITON_PORTS, Closed, ModelName, Port
from generator.spec.exporter import ExporterSettings

__all__ = [
    "EXPORTER_API_VERSION",
    "Replica",
    "DnsReplicas",
    "PoolTargets",
    "ExporterConfig",
    "parse_config",
    "load_config",
]

EXPORTER_API_VERSION = "tritonstack/exporter-v1"


class Replica(Closed):
    """One tritonserver whose metrics endpoint is ``http://<host>:<metrics>/metrics``."""

    host: str
    metrics: Port
    pid: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="tritonserver PID on this machine; enables process memory for it"
    )


class DnsReplicas(Closed):
    """A name resolved at every scrape; each address is one replica (labelled by its address)."""

    name: str
    metrics: Port = TRITON_PORTS.metrics


class PoolTargets(Closed):
    role: Literal["aggregated", "prefill", "decode"]
    models: Annotated[list[ModelName], Field(min_length=1)]
    replicas: list[Replica] = []
    dns: DnsReplicas | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PoolTargets:
        if bool(self.replicas) == (self.dns is not None):
            raise ValueError("give exactly one of replicas (static) or dns (a name resolving to every replica)")
        return self


class ExporterConfig(Closed):
    api_version: Literal["tritonstack/exporter-v1"] = Field(alias="apiVersion")
    stack: str
    exporter: ExporterSettings = ExporterSettings()
    pools: dict[str, PoolTargets]

    model_config = Closed.model_config | {"populate_by_name": True}


def parse_config(text: str, where: str = "exporter.yaml") -> ExporterConfig:
    """Validate exporter config text; every problem becomes a :class:`RuntimeSetupError` naming the field."""
    what = "an exporter config; render one with `tritonstack render` (it is build/monitoring/exporter.yaml)"
    return parse_config_text(text, where, ExporterConfig, EXPORTER_API_VERSION, what)


def load_config(path: Path) -> ExporterConfig:
    return parse_config(read_config_text(path, "exporter config"), str(path))
