"""The spec's ``exporter:`` section.

The exporter fetches every Triton ``/metrics`` target while Prometheus waits for the answer, so its
upstream budget must stay below the scrape timeout Prometheus sends; these settings bound that.
The shortest scrape timeout the project renders is 5 s (the local stack scrapes every 5 s, and
Prometheus caps the timeout at the interval; deployments scrape every 15 s with Prometheus' default
10 s timeout), so the defaults stay below it: 3 s for a scrape, 2.5 s for any one target. A target
is untrusted (issue 12): it is cut at its deadline and at ``max_target_bytes``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from generator.spec.base import Closed, Port

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
    target_timeout_s: float = Field(
        default=2.5,
        gt=0,
        le=60,
        description="Longest one target may take, connect to last byte; a scrape's budget cuts it shorter",
    )
    max_target_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 30)] = Field(
        default=16 << 20, description="Largest /metrics answer read from one target; a larger one fails it"
    )
    max_parallel: Annotated[int, Field(ge=1, le=256)] = Field(
        default=16,
        description="Targets fetched at the same time; a target waits only when there are more than this",
    )
    nvml: bool = Field(default=True, description="Read GPU memory through NVML where the driver offers it")
