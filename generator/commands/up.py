"""tritonstack up: render the stack, start every pool's tritonserver here, stop all on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from generator.commands.common import add_out_argument, add_reference_engine_argument, add_spec_argument
from generator.errors import RuntimeSetupError
from generator.pipeline import build
from generator.runtime.launcher import Launcher, LaunchSettings, Replica, tail
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

HELP = "render the stack and run it on this machine (one tritonserver per pool replica)"
DESCRIPTION = """\
Render the spec into DIR, start one tritonserver per pool replica on free ports, wait until all are
ready and print their endpoints. Ctrl-C (or SIGTERM) stops everything; so does any server dying,
with the tail of its log. On a machine without a GPU use --reference-engine.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    add_out_argument(parser)
    add_reference_engine_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address the servers bind to (default: 127.0.0.1)")
    parser.add_argument(
        "--ready-timeout", type=float, default=180.0, metavar="SECONDS", help="give up waiting after this long"
    )
    parser.add_argument("--force", action="store_true", help="replace DIR even if tritonstack did not write it")
    parser.add_argument(
        "--log-dir", type=Path, default=None, metavar="LOGS", help="server logs (default: DIR.logs/ beside DIR)"
    )


def run(args: argparse.Namespace) -> int:
    built = build(args.spec, args.out, reference_engine=args.reference_engine)
    for note in built.notes:
        print(f"note: {note}")
    write_output(built.files, args.out, force=args.force)
    install = find_tritonserver()
    uses_engines = any(m.engine_dir is not None for m in built.stack.models)
    if uses_engines and install.source == "pytriton wheel":
        raise RuntimeSetupError(
            "this machine's tritonserver is the CPU build from nvidia-pytriton, which has no TensorRT-LLM "
            "backend; add --reference-engine to run the stack on CPU"
        )
    settings = LaunchSettings(host=args.host, ready_timeout_s=args.ready_timeout)
    log_dir = args.log_dir or args.out.with_name(args.out.name + ".logs")
    launcher = Launcher(built.stack, args.out, install, log_dir, settings)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        launcher.start()
        total = len(launcher.replicas)
        print(f"starting {total} tritonserver(s) ({install.source}); logs in {log_dir}/", file=sys.stderr)
        launcher.wait_ready(lambda r: _progress(r, launcher))
        _print_endpoints(launcher)
        print("\nready. Ctrl-C stops everything.", flush=True)
        while not stop.is_set():
            dead = launcher.first_exited()
            if dead is not None:
                code = dead.exited()
                print(
                    f"error: tritonserver {dead.name} exited with code {code}; stopping the stack\n"
                    f"last lines of {dead.log_path}:\n{tail(dead.log_path)}",
                    file=sys.stderr,
                )
                return 1
            stop.wait(0.5)
        print("stopping…", file=sys.stderr)
        return 0
    finally:
        launcher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _progress(replica: Replica, launcher: Launcher) -> None:
    done = sum(1 for r in launcher.replicas if r.ready_after_s is not None)
    print(
        f"  [{done}/{len(launcher.replicas)}] {replica.name} ready after {replica.ready_after_s:.1f}s",
        file=sys.stderr,
        flush=True,
    )


def _print_endpoints(launcher: Launcher) -> None:
    print(f"\n{'replica':<20} {'HTTP':<28} {'gRPC':<22} metrics")
    for r in launcher.replicas:
        print(f"{r.name:<20} {r.http_url:<28} {r.grpc_address:<22} {r.metrics_url}")
