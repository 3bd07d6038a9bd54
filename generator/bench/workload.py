"""The prompts a benchmark sends: one fixed prompt, or a dataset read from a file.

A dataset is either JSON Lines (one object per line with ``prompt`` — a string — or ``messages`` — a
chat message list) or plain text with one prompt per non-empty line. Requests take prompts in file
order and wrap around, so a run is repeatable and every stack sees the same sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from generator.bench.settings import ApiKind, BenchError

__all__ = ["Prompt", "Workload", "load_dataset"]


@dataclass(frozen=True)
class Prompt:
    """A completion prompt, or a list of chat messages (each ``{"role", "content"}``)."""

    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None

    def as_messages(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.text or ""}]


@dataclass(frozen=True)
class Workload:
    """The ordered prompts of a run; ``prompt(i)`` is the one the i-th request sends."""

    prompts: tuple[Prompt, ...]

    def prompt(self, index: int) -> Prompt:
        return self.prompts[index % len(self.prompts)]

    def check_api(self, api: ApiKind, source: str) -> None:
        if api == "completions" and any(p.messages is not None for p in self.prompts):
            raise BenchError(
                f"{source}: holds chat messages, which the completions API cannot send; use --api chat"
            )

    @classmethod
    def single(cls, text: str) -> Workload:
        return cls((Prompt(text=text),))


def load_dataset(path: Path) -> Workload:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"--dataset {path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix in (".jsonl", ".ndjson"):
        prompts = [_jsonl_prompt(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        prompts = [Prompt(text=line.strip()) for line in text.splitlines() if line.strip()]
    if not prompts:
        raise BenchError(f"--dataset {path}: holds no prompts")
    return Workload(tuple(prompts))


def _jsonl_prompt(path: Path, number: int, line: str) -> Prompt:
    where = f"{path}:{number}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise BenchError(f"{where}: each line must be an object with 'prompt' or 'messages'")
    if isinstance(item.get("prompt"), str):
        return Prompt(text=item["prompt"])
    messages = item.get("messages")
    if isinstance(messages, list) and messages and all(_is_message(m) for m in messages):
        return Prompt(messages=tuple({"role": m["role"], "content": m["content"]} for m in messages))
    raise BenchError(
        f"{where}: needs 'prompt' (a string) or 'messages' (a list of {{\"role\", \"content\"}} objects)"
    )


def _is_message(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("role"), str) and isinstance(item.get("content"), str)
