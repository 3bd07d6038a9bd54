"""A whole stack on this machine: the pools' tritonservers, then router, exporter and Prometheus.

The router and exporter get configs written for the servers just started (static addresses and
the servers' PIDs) into the run directory, next to the logs, and ``endpoints.json`` there says where
everything answers (``tritonstack verify --from-up``); the rendered output stays exactly as rendered. Prometheus starts only when its binary is installed (Debian package ``prometheus``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generator.render.monitoring import local_exporter_config, local_prometheus_config
from generator.render.options import RenderOptions
from generator.render.routes import local_routes
from generator.runtime.launcher import Launcher, LaunchSettings, Managed, Service, free_ports
from generator.runtime.tritonserver import TritonInstall
from generator.spec import Stack

__all__ = ["ENDPOINTS_FILE", "LocalStackSettings", "service_url", "start_local_stack", "write_endpoints"]

# Written into the run directory once everything is ready.
ENDPOINTS_FILE = "endpoints.json"


@dataclass(frozen=True)
class LocalStackSettings:
    launch: LaunchSettings = LaunchSettings()
    router_port: int | None = None  # None: the spec's; 0: any free port
    exporter_port: int | None = None
    prometheus: bool = True  # when the binary is installed
    prometheus_port: int = 0
    scrape_interval: str = "5s"


def start_local_stack(
    stack: Stack,
    out_dir: Path,
    run_dir: Path,
    install: TritonInstall,
    options: RenderOptions,
    settings: LocalStackSettings = LocalStackSettings(),
    on_progress: Callable[[Managed], None] | None = None,
) -> Launcher:
    """Start everything and wait until it is ready; on failure, stop what was started and raise."""
    launcher = Launcher(stack, out_dir, install, run_dir, settings.launch)
    try:
        launcher.start()
        launcher.wait_ready(on_progress)
        host = settings.launch.host
        endpoints = launcher.endpoints()

        # In run_dir/router/ so that tokenizer paths, written relative to routes.yaml, resolve.
        routes = run_dir / "router" / "routes.yaml"
        routes.parent.mkdir(parents=True, exist_ok=True)
        routes.write_bytes(local_routes(stack, endpoints, RenderOptions(options.spec_dir, run_dir)))
        router_port = _port(settings.router_port, stack.router.port, host)
        launcher.start_service(
            "router",
            _tritonstack("router", "--config", str(routes), "--host", host, "--port", str(router_port)),
            f"http://{host}:{router_port}",
            "/ready",
        )

        exporter_config = run_dir / "exporter.local.yaml"
        exporter_config.write_bytes(local_exporter_config(stack, endpoints, launcher.pids()))
        exporter_port = _port(settings.exporter_port, stack.exporter.port, host)
        launcher.start_service(
            "exporter",
            _tritonstack(
                "exporter", "--config", str(exporter_config), "--host", host, "--port", str(exporter_port)
            ),
            f"http://{host}:{exporter_port}",
            "/-/healthy",
        )

        prometheus = shutil.which("prometheus")
        if settings.prometheus and prometheus:
            prometheus_port = _port(settings.prometheus_port, 0, host)
            config = run_dir / "prometheus.local.yml"
            rules = sorted((out_dir / "monitoring" / "rules").glob("*.yml"))
            config.write_bytes(
                local_prometheus_config(
                    stack,
                    endpoints,
                    exporter=(host, exporter_port),
                    router=(host, router_port),
                    rule_files=[r.absolute() for r in rules],
                    scrape_interval=settings.scrape_interval,
                )
            )
            launcher.start_service(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
                    f"--web.listen-address={host}:{prometheus_port}",
                ],
                f"http://{host}:{prometheus_port}",
                "/-/ready",
            )
        launcher.wait_ready(on_progress)
        write_endpoints(run_dir / ENDPOINTS_FILE, launcher, out_dir)
    except BaseException:
        launcher.stop()
        raise
    return launcher


def write_endpoints(path: Path, launcher: Launcher, out_dir: Path) -> None:
    """Where every part of a running local stack answers, for ``tritonstack verify --from-up``."""
    document = {
        "out_dir": str(out_dir.absolute()),
        "pools": {
            pool: [
                {"http": r.http_url, "grpc": r.grpc_address, "metrics": r.metrics_url}
                for r in launcher.replicas
                if r.pool == pool
            ]
            for pool in dict.fromkeys(r.pool for r in launcher.replicas)
        },
        **{s.label: s.url for s in launcher.services if isinstance(s, Service)},
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def service_url(launcher: Launcher, label: str) -> str | None:
    return next((s.url for s in launcher.services if isinstance(s, Service) and s.label == label), None)


def _port(requested: int | None, from_spec: int, host: str) -> int:
    port = from_spec if requested is None else requested
    return port if port else free_ports(1, host)[0]


def _tritonstack(*args: str) -> list[str]:
    return [sys.executable, "-m", "generator.cli", *args]
