"""``tritonstack exporter``: serve Prometheus metrics for a rendered stack."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from types import FrameType

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="exporter config rendered by `tritonstack render` (build/monitoring/exporter.yaml)",
    )
    parser.add_argument("--port", type=int, default=None, help="listen port (default: the config's exporter.port)")
    parser.add_argument(
        "--host", "--bind", dest="bind", default=None, help="listen address (default: the config's exporter.bind)"
    )


def run(args: argparse.Namespace) -> int:
    # Imported here so `tritonstack --help` does not pay for httpx and prometheus_client.
    from generator.exporter.config import load_config  # noqa: PLC0415
    from generator.exporter.server import ExporterRuntime  # noqa: PLC0415

    # Targets that go down or come back are logged with their reason (a deadline, the size cap).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    runtime = ExporterRuntime(config, bind=args.bind, port=args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        runtime.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with runtime:
        host = args.bind or config.exporter.bind
        print(f"tritonstack exporter: http://{host}:{runtime.port}/metrics ({len(config.pools)} pool(s))", flush=True)
        runtime.serve_forever()
    return 0

