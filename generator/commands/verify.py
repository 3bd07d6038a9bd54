"""tritonstack verify: check a live stack against what its spec renders to."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from generator.commands.common import add_out_argument, add_reference_engine_argument, add_spec_argument
from generator.errors import TritonstackError
from generator.pipeline import build
from generator.runtime.local_stack import ENDPOINTS_FILE
from generator.spec import Stack
from generator.verify.checks import ReplicaAddress, Targets, verify_stack
from generator.verify.conformance import ConformanceSettings
from generator.verify.report import render_json, render_table

DESCRIPTION = """\
Check a deployed stack (tritonstack up, compose, or a port-forwarded cluster) against what the spec
renders to, and exit 1 if anything differs:

  1. every served model's /v2/models/<m>/config against the render: inputs and outputs (name,
     data_type, dims, optional), max_batch_size, decoupled, and every rendered parameter (a missing
     or different parameter fails, naming the key);
  2. requests shaped like NVIDIA's TensorRT-LLM clients to every model kind of every pool replica
     (ensemble, BLS, engine; gRPC stream_infer and HTTP generate / generate_stream; streaming and
     not; log probs; perf metrics; stop words; a stop request; cancellation), and OpenAI chat and
     completions through the router (streamed and not, usage, stop strings, a closed stream);
  3. the metric families the exporter and the dashboards read, on each Triton's /metrics, on the
     exporter's and on the router's.

Render with the same spec, --out and --reference-engine the stack was rendered with (relative paths
in the configs are relative to --out). Each Triton replica is --triton POOL=URL (its HTTP address;
repeat for each replica, in order). Its gRPC and metrics addresses default to Triton's port layout
(HTTP port + 1, HTTP port + 2); give them with --triton-grpc / --triton-metrics, in the same order.

For a stack started by `tritonstack up`, --from-up RUN_DIR reads every address (and --out) from
RUN_DIR/endpoints.json:
  tritonstack verify examples/quickstart.yaml --reference-engine --from-up build/quickstart.run

example (addresses given by hand, e.g. from port-forwards):
  tritonstack verify examples/quickstart.yaml --reference-engine --out build \\
      --triton chat=http://127.0.0.1:8000 --triton chat=http://127.0.0.1:8100 \\
      --triton pd-prefill=http://127.0.0.1:8200 --triton pd-decode=http://127.0.0.1:8300 \\
      --router http://127.0.0.1:9000 --exporter http://127.0.0.1:9400 --api-key $KEY

Output: a table (check, target, result, detail), or --json. An address that does not answer is a
failed check (reachable), not a crash.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_argument(parser)
    add_out_argument(parser)
    add_reference_engine_argument(parser)
    parser.add_argument(
        "--triton",
        action="append",
        default=[],
        metavar="POOL=URL",
        help="HTTP base URL of a pool replica (repeatable)",
    )
    parser.add_argument(
        "--triton-grpc",
        action="append",
        default=[],
        metavar="POOL=HOST:PORT",
        help="gRPC address of a pool replica, in --triton order (default: HTTP port + 1)",
    )
    parser.add_argument(
        "--triton-metrics",
        action="append",
        default=[],
        metavar="POOL=URL",
        help="metrics URL of a pool replica, in --triton order (default: http://host:<HTTP port + 2>/metrics)",
    )
    parser.add_argument(
        "--from-up",
        type=Path,
        metavar="RUN_DIR",
        help="read the addresses and --out of a stack `tritonstack up` started from RUN_DIR/endpoints.json",
    )
    parser.add_argument("--router", metavar="URL", help="the router's base URL (without /v1)")
    parser.add_argument("--exporter", metavar="URL", help="the exporter's base URL")
    parser.add_argument("--api-key", metavar="KEY", help="sent to the router as Authorization: Bearer KEY")
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="per request (default: 60)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    if args.from_up is not None:
        _read_up_endpoints(args)
    built = build(args.spec, args.out, reference_engine=args.reference_engine)
    targets = Targets(
        replicas=tuple(_replicas(built.stack, args.triton, args.triton_grpc, args.triton_metrics)),
        router_url=_base_url(args.router, "--router") if args.router else None,
        exporter_url=_base_url(args.exporter, "--exporter") if args.exporter else None,
        api_key=args.api_key,
        timeout_s=args.timeout,
        conformance=ConformanceSettings(timeout_s=args.timeout),
    )
    results = verify_stack(built.stack, built.files, targets)
    print(render_json(results) if args.json else render_table(results))
    sys.stdout.flush()
    return 0 if all(r.passed for r in results) else 1


class VerifyArgumentError(TritonstackError):
    """An address argument of ``tritonstack verify`` is malformed or names an unknown pool."""


def _read_up_endpoints(args: argparse.Namespace) -> None:
    """Fill the address arguments (and --out) from a run directory of `tritonstack up`; addresses
    given on the command line as well are kept after these."""
    path = args.from_up / ENDPOINTS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        pools = document["pools"]
        replicas = [(pool, r) for pool, members in pools.items() for r in members]
        args.triton = [f"{pool}={r['http']}" for pool, r in replicas] + args.triton
        args.triton_grpc = [f"{pool}={r['grpc']}" for pool, r in replicas] + args.triton_grpc
        args.triton_metrics = [f"{pool}={r['metrics']}" for pool, r in replicas] + args.triton_metrics
        args.router = args.router or document.get("router")
        args.exporter = args.exporter or document.get("exporter")
        args.out = Path(document["out_dir"])
    except FileNotFoundError:
        raise VerifyArgumentError(
            f"--from-up {args.from_up}: no {ENDPOINTS_FILE} there; give the run directory `tritonstack up` "
            "printed (it writes the file once the stack is ready)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerifyArgumentError(f"--from-up {args.from_up}: {path} is not what `tritonstack up` writes ({exc})") from None


def _pairs(values: list[str], flag: str, pools: set[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        pool, sep, address = value.partition("=")
        if not sep or not pool or not address:
            raise VerifyArgumentError(f"{flag} {value!r}: expected POOL=ADDRESS")
        if pool not in pools:
            raise VerifyArgumentError(
                f"{flag} {value!r}: the spec has no pool {pool!r} (pools: {', '.join(sorted(pools))})"
            )
        pairs.append((pool, address))
    return pairs


def _base_url(value: str, flag: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VerifyArgumentError(f"{flag} {value!r}: expected a URL such as http://host:port")
    return value.rstrip("/")


def _replicas(stack: Stack, http: list[str], grpc: list[str], metrics: list[str]) -> list[ReplicaAddress]:
    pools = {p.name for p in stack.pools}
    grpc_by_pool: dict[str, list[str]] = {}
    for pool, address in _pairs(grpc, "--triton-grpc", pools):
        grpc_by_pool.setdefault(pool, []).append(address)
    metrics_by_pool: dict[str, list[str]] = {}
    for pool, address in _pairs(metrics, "--triton-metrics", pools):
        metrics_by_pool.setdefault(pool, []).append(address)
    replicas: list[ReplicaAddress] = []
    for pool, url in _pairs(http, "--triton", pools):
        url = _base_url(url, "--triton")
        index = sum(r.pool == pool for r in replicas)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        grpc_given = grpc_by_pool.get(pool, [])
        metrics_given = metrics_by_pool.get(pool, [])
        replicas.append(
            ReplicaAddress(
                pool=pool,
                index=index,
                http_url=url,
                grpc_address=grpc_given[index] if index < len(grpc_given) else f"{parts.hostname}:{port + 1}",
                metrics_url=(
                    metrics_given[index]
                    if index < len(metrics_given)
                    else f"http://{parts.hostname}:{port + 2}/metrics"
                ),
            )
        )
    return replicas
