"""tritonstack schema: print the spec's JSON Schema (for editors and CI linters)."""

from __future__ import annotations

import argparse
import json

from generator.spec import json_schema


def configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    del args
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0
