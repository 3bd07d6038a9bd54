"""``tritonstack``: a thin command line over the library.

Each command is a module with ``HELP``, ``configure(parser)`` and ``run(args) -> int``. A user
mistake (any :class:`TritonstackError`) prints its message and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from generator import __version__
from generator.errors import TritonstackError

__all__ = ["build_parser", "main", "report_error"]

# command name → (module, one-line help); the order is the order of `tritonstack --help`. Only the
# module of the command being run is imported, so `--help` and short commands start fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("generator.commands.validate", "check a spec and the model repositories it renders to; writes nothing"),
    "render": ("generator.commands.render", "render the spec into DIR (model repositories, router, monitoring, deploy)"),
    "check": ("generator.commands.check", "compare DIR with a fresh render; exit 1 and print a diff on drift"),
    "up": ("generator.commands.up", "render the stack and run it on this machine; Ctrl-C stops everything"),
    "verify": ("generator.commands.verify", "check a running stack against its spec: served configs, client requests, metrics"),
    "plan": ("generator.plan.command", "capacity plan per GPU and model: weights, KV budgets, decode ceiling, $/M"),
    "lint": ("generator.plan.lint_command", "find problems Triton would only show at load time (id, severity, fix)"),
    "recipes": ("generator.plan.recipes_command", "write per-model engine build scripts"),
    "advise": ("generator.commands.advise", "cheapest GPU/precision/TP/batch/(dis)aggregation meeting a TTFT/ITL target"),
    "router": ("generator.router.command", "serve the OpenAI-compatible router over the stack's Triton pools"),
    "exporter": ("generator.exporter.command", "serve Prometheus metrics: tokens/s, KV cache, resident memory"),
    "bench": ("generator.bench.command", "benchmark OpenAI-compatible stacks side by side (TTFT, tokens/s)"),
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
            description=getattr(module, "DESCRIPTION", module.HELP),
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
