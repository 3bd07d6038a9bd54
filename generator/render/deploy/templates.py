"""Rendering of the deployment templates (``deploy/templates/``): YAML-safe filters and a parse check.

Templates lay out objects and place values Python computed. Two filters keep any value from
breaking the YAML: ``v`` writes a scalar as a JSON literal (valid YAML, quoted where needed) and
``block(n)`` writes a list or mapping as block YAML indented by ``n``. Every rendered file is parsed
back before it is returned, so a template mistake is a :class:`RenderError` at render time, never a
manifest that ``kubectl`` rejects later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from generator import yamlio
from generator.errors import RenderError
from generator.render.jinja import environment, render_template
from generator.resources import DEPLOY_ROOT

__all__ = ["K8S_TEMPLATES", "COMPOSE_TEMPLATES", "render_yaml", "to_yaml_block", "to_yaml_value"]

K8S_TEMPLATES = DEPLOY_ROOT / "templates" / "k8s"
COMPOSE_TEMPLATES = DEPLOY_ROOT / "templates" / "compose"


def to_yaml_value(value: Any) -> str:
    if not isinstance(value, (str, int, float, bool)) or value is None:
        raise RenderError(f"template value {value!r} is not a scalar; use the block filter")
    return json.dumps(value, ensure_ascii=False)


class _BlockDumper(yaml.SafeDumper):
    """Indents sequences inside mappings (the kubectl style) and writes multi-line text as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_BlockDumper.add_representer(str, _str_presenter)


def to_yaml_block(value: Any, indent: int) -> str:
    if not isinstance(value, (dict, list)) or not value:
        raise RenderError(f"template block {value!r} must be a non-empty list or mapping")
    text = yaml.dump(value, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=1_000_000, allow_unicode=True)
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").split("\n"))


def _environment(directory: Path) -> None:
    env = environment(directory)
    env.filters["v"] = to_yaml_value
    env.filters["block"] = to_yaml_block


def render_yaml(directory: Path, name: str, context: dict[str, Any]) -> bytes:
    """Render one template to YAML bytes, and prove the result parses."""
    _environment(directory)
    text = render_template(directory, name, context)
    try:
        list(yamlio.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RenderError(f"deploy template {name} rendered invalid YAML ({exc}); this is a tritonstack bug") from None
    return text.encode("utf-8")
