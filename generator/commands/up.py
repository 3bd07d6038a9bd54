"""tritonstack up: render the stack and run all of it here; Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from generator.commands.common import add_reference_engine_argument, add_spec_argument, default_out_dir
from generator.errors import EnvironmentNotReady, RuntimeSetupError
from generator.pipeline import Built, build
from generator.render.options import RenderOptions
from generator.runtime.environment import preflight, python_stub_count
from generator.runtime.launcher import Launcher, LaunchSettings, Managed, launch_notes, tail
from generator.runtime.local_stack import LocalStackSettings, start_local_stack
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

DESCRIPTION = """\
Render the spec into DIR (default: build/<spec name>/, where `make demo` writes the quickstart, so a
second `up` refreshes its own output), check this machine (tritonserver, the python backend stub,
numpy, ports, /dev/shm: `tritonstack doctor` shows the same), start one tritonserver per pool replica on free ports, then the router,
the exporter and (when installed) Prometheus; wait until all are ready and print their addresses.
Ctrl-C (or SIGTERM) stops everything; so does any process dying, with the tail of its log. Logs and
the local configs go to DIR.run/. On a machine without a GPU use --reference-engine.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output directory (default: build/<spec name>/)"
    )
    add_reference_engine_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address everything binds to (default: 127.0.0.1)")
    parser.add_argument("--router-port", type=int, default=None, help="default: the spec's router.port; 0 = any free")
    parser.add_argument("--exporter-port", type=int, default=None, help="default: the spec's exporter.port; 0 = any free")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus even if installed")
    parser.add_argument(
        "--ready-timeout", type=float, default=180.0, metavar="SECONDS", help="give up waiting after this long"
    )
    parser.add_argument("--force", action="store_true", help="replace DIR even if tritonstack did not write it")
    parser.add_argument(
        "--run-dir", type=Path, default=None, metavar="RUN", help="logs and local configs (default: DIR.run/)"
    )


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        args.out = default_out_dir(args.spec)
    built = build(args.spec, args.out, reference_engine=args.reference_engine)
    for note in [*built.notes, *launch_notes(built.stack)]:
        print(f"note: {note}")
    _check_environment(built, args)
    write_output(built.files, args.out, force=args.force)
    install = find_tritonserver()
    if any(m.engine_dir is not None for m in built.stack.models) and install.source == "pytriton wheel":
        raise RuntimeSetupError(
            "this machine's tritonserver is the CPU build from nvidia-pytriton, which has no TensorRT-LLM "
            "backend; add --reference-engine to run the stack on CPU"
        )
    run_dir = args.run_dir or args.out.with_name(args.out.name + ".run")
    settings = LocalStackSettings(
        launch=LaunchSettings(host=args.host, ready_timeout_s=args.ready_timeout),
        router_port=args.router_port,
        exporter_port=args.exporter_port,
        prometheus=not args.no_prometheus,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    replicas = sum(p.replicas for p in built.stack.pools)
    print(f"starting {replicas} tritonserver(s) ({install.source}) and the services; logs in {run_dir}/", file=sys.stderr)
    launcher: Launcher | None = None
    try:
        launcher = start_local_stack(
            built.stack,
            args.out,
            run_dir,
            install,
            RenderOptions(spec_dir=args.spec.parent, out_dir=args.out),
            settings,
            on_progress=lambda member: _progress(member),
        )
        _print_addresses(launcher)
        print("\nready. Ctrl-C stops everything.", flush=True)
        while not stop.is_set():
            dead = launcher.first_exited()
            if dead is not None:
                print(
                    f"error: {dead.name} exited with code {dead.exited()}; stopping the stack\n"
                    f"last lines of {dead.log_path}:\n{tail(dead.log_path)}",
                    file=sys.stderr,
                )
                return 1
            stop.wait(0.5)
        print("stopping…", file=sys.stderr)
        return 0
    finally:
        if launcher is not None:
            launcher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_environment(built: Built, args: argparse.Namespace) -> None:
    """Refuse before anything is written or started when this machine cannot run the stack."""
    stack = built.stack
    ports = {
        "router": stack.router.port if args.router_port is None else args.router_port,
        "exporter": stack.exporter.port if args.exporter_port is None else args.exporter_port,
    }
    stubs = python_stub_count(built.files, {pool.name: pool.replicas for pool in stack.pools})
    failed = [f for f in preflight(python_stubs=stubs, ports=ports, host=args.host) if not f.ok and f.needed_by_up]
    if failed:
        raise EnvironmentNotReady([f"{f.name}: {f.detail}\n  fix: {f.fix}" for f in failed])


def _progress(member: Managed) -> None:
    print(f"  {member.name} ready after {member.ready_after_s:.1f}s", file=sys.stderr, flush=True)


def _print_addresses(launcher: Launcher) -> None:
    print(f"\n{'process':<20} {'HTTP':<28} {'gRPC':<22} metrics")
    for replica in launcher.replicas:
        print(f"{replica.name:<20} {replica.http_url:<28} {replica.grpc_address:<22} {replica.metrics_url}")
    for service in launcher.services:
        print(f"{service.name:<20} {service.url}")
    router = next((s for s in launcher.services if s.label == "router"), None)
    if router is not None:
        print(f"\nOpenAI-compatible endpoint: {router.url}/v1   (e.g. OpenAI(base_url='{router.url}/v1', api_key='-'))")
