"""``tritonstack``: a thin command line over the library.

Each command is a module of ``generator/commands/`` with ``configure(parser)`` and ``run(args) -> int``
(and an optional longer ``DESCRIPTION``); its one-line help is in ``COMMANDS``. ``main`` is the one
error boundary: a user mistake (any :class:`TritonstackError`) prints its message and exits 1, never
a traceback; ``python -m generator.cli <command>`` is how the launcher starts the router and exporter.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from generator import __version__
from generator.errors import TritonstackError

__all__ = ["build_parser", "main", "report_error"]

# command name → (module, one-line help); the order is the order of `tritonstack --help`. The help
# is written here only (a module adds a longer DESCRIPTION where it has one), so that `--help` and
# short commands import no more than the module of the command being run.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("generator.commands.validate", "check a spec and the model repositories it renders to; writes nothing"),
    "render": ("generator.commands.render", "render the spec into DIR (model repositories, router, monitoring, deploy); atomic"),
    "check": ("generator.commands.check", "compare DIR with a fresh render; exit 1 and print a diff on drift (for GitOps CI)"),
    "up": ("generator.commands.up", "render the stack and run it on this machine; Ctrl-C stops everything"),
    "verify": ("generator.commands.verify", "check a running stack against its spec: served configs, client requests, metrics"),
    "plan": ("generator.commands.plan", "capacity plan per GPU and model: weights, KV budgets, concurrency, decode ceiling, $/M tokens"),
    "lint": ("generator.commands.lint", "find problems Triton would only show at load time (ids, severities, fixes)"),
    "recipes": ("generator.commands.recipes", "write per-model engine build scripts (quantize + trtllm-build, or ModelOpt for the LLM-API target)"),
    "advise": ("generator.commands.advise", "search GPU x precision x TP x batch x (dis)aggregation for a workload and SLA; rank by $/M tokens"),
    "router": ("generator.commands.router", "serve the OpenAI-compatible router over the stack's Triton pools"),
    "exporter": ("generator.commands.exporter", "serve Prometheus metrics (tokens, KV cache, resident memory per model) for a rendered stack"),
    "bench": ("generator.commands.bench", "benchmark OpenAI-compatible stacks side by side: TTFT, decode tokens/s, concurrency sweeps"),
    "schema": ("generator.commands.schema", "print the JSON Schema of stack.yaml (e.g. > stack.schema.json)"),
    "doctor": ("generator.commands.doctor", "report what this machine has for `up` (tritonserver, numpy, tools) and how to add what is missing"),
}

DESCRIPTION = """\
Turn one stack.yaml into a Triton + TensorRT-LLM serving stack.

typical use:
  tritonstack validate stack.yaml
  tritonstack render stack.yaml --out build/     (add --reference-engine to run any spec on CPU)
  tritonstack check stack.yaml --out build/      (exit 1 and a diff when build/ drifted)
  tritonstack up stack.yaml --reference-engine   (start every pool locally; Ctrl-C stops all)
  tritonstack plan stack.yaml                    (memory, KV budgets, decode ceilings per GPU)
  tritonstack bench --endpoint a=http://host:9000 --model m
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser of ``command`` (others get their one-line help only)."""
    parser = argparse.ArgumentParser(
        prog="tritonstack", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tritonstack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        subparser = sub.add_parser(
            name,
            help=help_text,
            description=getattr(module, "DESCRIPTION", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(subparser)
        subparser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(arguments)
    try:
        return int(args._run(args))
    except TritonstackError as exc:
        report_error(exc)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


def report_error(exc: TritonstackError) -> None:
    """One ``error:`` per problem, so that each of several spec problems reads as an error."""
    for problem in exc.problem_lines():
        print(f"error: {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
