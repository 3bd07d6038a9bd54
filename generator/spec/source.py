"""Load YAML while remembering where every value came from.

The spec loader needs ``stack.yaml:14: models[1].max_batch_size: ...`` in its errors, so parsing
keeps a map from field path to line number next to the plain Python data. Duplicate keys are an
error here (PyYAML silently keeps the last one), and so is any YAML tag that would build something
other than plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator.errors import SpecError

__all__ = ["SourceMap", "Located", "load_yaml", "parse_yaml", "format_path"]

PathKey = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Field path → 1-based line number in the source file."""

    filename: str
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def where(self, path: PathKey) -> str:
        line = self.line_of(path)
        return f"{self.filename}:{line}" if line is not None else self.filename


@dataclass
class Located:
    data: Any
    source: SourceMap


def format_path(path: PathKey) -> str:
    """``("models", 1, "name")`` → ``models[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_yaml(path: Path) -> Located:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot read the spec: {exc}"]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, filename: str) -> Located:
    source = SourceMap(filename)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError([f"{filename}{line}: YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"{filename}: YAML syntax error: {exc}"]) from None
    if node is None:
        raise SpecError([f"{filename}: the file is empty; start from examples/quickstart.yaml"])
    problems: list[str] = []
    data = _to_python(node, (), source, problems)
    if problems:
        raise SpecError(problems)
    return Located(data, source)


_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


def _to_python(node: yaml.Node, path: PathKey, source: SourceMap, problems: list[str]) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    where = f"{source.filename}:{node.start_mark.line + 1}: {format_path(path)}"
    if isinstance(node, yaml.MappingNode):
        if node.tag != "tag:yaml.org,2002:map":
            problems.append(f"{where}: YAML tag {node.tag} is not allowed in a spec")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(f"{where}: only plain keys are allowed (no merge keys or complex keys)")
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in result:
                problems.append(
                    f"{source.filename}:{key_node.start_mark.line + 1}: {format_path(child)}: "
                    f"duplicate key (first at line {source.lines[child]}); keep one"
                )
                continue
            source.lines[child] = key_node.start_mark.line + 1
            result[key] = _to_python(value_node, child, source, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            problems.append(f"{where}: YAML tag {node.tag} is not allowed in a spec")
            return None
        return [_to_python(item, (*path, i), source, problems) for i, item in enumerate(node.value)]
    if node.tag not in _SCALAR_TAGS:
        problems.append(f"{where}: YAML tag {node.tag} is not allowed in a spec")
        return None
    return _SCALARS.construct_object(node)


# A loader over an empty stream, used only to turn scalar nodes into Python values
# with YAML 1.1 core rules (ints, floats, bools, nulls) exactly as safe_load would.
_SCALARS = yaml.SafeLoader("")
