"""The spec's ``exporter:`` section.

The exporter fetches every Triton ``/metrics`` target while Prometheus waits for the answer, so its
upstream budget must stay below the scrape timeout Prometheus sends; these settings bound that.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from generator.spec_base import Closed, Port

__all__ = ["ExporterSettings"]


class ExporterSettings(Closed):
    bind: str = "127.0.0.1"
    port: Port = 9400
    upstream_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Budget for fetching all targets when the scrape carries no X-Prometheus-Scrape-Timeout-Seconds",
    )
    timeout_headroom_s: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="Kept free below Prometheus' scrape timeout for parsing and answering",
    )
    max_parallel: Annotated[int, Field(ge=1, le=256)] = Field(
        default=16, description="Targets fetched at the same time"
    )
    nvml: bool = Field(default=True, description="Read GPU memory through NVML where the driver offers it")
