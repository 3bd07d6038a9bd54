"""``tritonstack``: a thin command line over the library.

Each command is a module with ``HELP``, ``configure(parser)`` and ``run(args) -> int``. A user
mistake (any :class:`TritonstackError`) prints its message and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from generator.errors import TritonstackError

__all__ = ["main", "build_parser"]

# command name → module; the order is the order of `tritonstack --help`.
COMMANDS: dict[str, str] = {
    "validate": "generator.commands.validate",
    "render": "generator.commands.render",
    "check": "generator.commands.check",
    "up": "generator.commands.up",
    "schema": "generator.commands.schema",
}

DESCRIPTION = """\
Turn one stack.yaml into a Triton + TensorRT-LLM serving stack.

typical use:
  tritonstack validate stack.yaml
  tritonstack render stack.yaml --out build/     (add --reference-engine to run any spec on CPU)
  tritonstack check stack.yaml --out build/      (exit 1 and a diff when build/ drifted)
  tritonstack up stack.yaml --reference-engine   (start every pool locally; Ctrl-C stops all)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonstack", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except TritonstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
