"""The one place Jinja environments are made: StrictUndefined, no autoescape, our filters.

Templates only place values that Python computed; an undefined name is an error at render time, so
no ``${placeholder}`` or empty value can reach a rendered file.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import jinja2

from generator.errors import RenderError

__all__ = ["environment", "render_template", "pbtxt_str"]


def pbtxt_str(value: object) -> str:
    """Quote a value as a protobuf text-format string literal.

    Everything that is not printable ASCII is written as an octal escape, so no spec string can end
    the literal early or inject fields into a config.pbtxt.
    """
    out = ['"']
    for byte in str(value).encode("utf-8"):
        char = chr(byte)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    out.append('"')
    return "".join(out)


@functools.lru_cache(maxsize=8)
def environment(directory: Path) -> jinja2.Environment:
    if not directory.is_dir():
        raise RenderError(f"template folder {directory} is missing; reinstall tritonstack")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["pbtxt_str"] = pbtxt_str
    return env


def render_template(directory: Path, name: str, context: Mapping[str, object]) -> str:
    try:
        return environment(directory).get_template(name).render(**context)
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {name}: {exc.message}; this is a tritonstack bug, please report it") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {name}: {exc}") from None
