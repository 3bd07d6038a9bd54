"""Reading the rendered runtime configs (routes.yaml, exporter.yaml): one way for every part.

Each file carries an ``apiVersion`` of its own; a wrong or missing one, invalid YAML, or a field that
does not validate becomes one :class:`RuntimeSetupError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from generator import yamlio
from generator.errors import RuntimeSetupError

__all__ = ["parse_config_text", "read_config_text"]

M = TypeVar("M", bound=BaseModel)


def parse_config_text(text: str, where: str, model: type[M], api_version: str, what: str) -> M:
    """Validate ``text`` as ``model``; ``what`` says what the file should be and how to get one."""
    try:
        data = yamlio.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuntimeSetupError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("apiVersion") != api_version:
        raise RuntimeSetupError(f"{where}: not {what} (apiVersion must be {api_version})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{where}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        ]
        raise RuntimeSetupError("\n".join(lines)) from None


def read_config_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuntimeSetupError(f"cannot read {what} {path}: {exc.strerror}") from None
