"""Counting output tokens, and saying how they were counted.

Preference order: the server's own ``usage.completion_tokens`` (exact, and what the server bills),
then the model's tokenizer re-encoding the streamed text (close, may differ by a token at merges),
then the number of content chunks (exact only for servers that stream one token per chunk). The
source travels with every count into the tables and the JSON, so a reader knows what a tokens/s
figure is made of.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from generator.bench.records import RequestRecord, TokenSource
from generator.bench.settings import BenchError

__all__ = ["Tokenizer", "TokenCounter", "load_tokenizer", "describe_source"]

SOURCE_DESCRIPTIONS: dict[str, str] = {
    "usage": "tokens counted from the server's usage",
    "tokenizer": "tokens counted by re-encoding the output with the model's tokenizer (the server sent no usage)",
    "chunks": "tokens NOT counted: the server sent no usage and no --tokenizer was given, so figures count "
    "streamed content chunks",
    "mixed": "tokens counted from the server's usage for some requests and by fallback for others",
}


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def load_tokenizer(directory: Path) -> Tokenizer:
    """A Hugging Face tokenizer from a local directory (never the hub: runs must not download)."""
    try:
        from transformers import AutoTokenizer  # noqa: PLC0415  (heavy import, only when asked for)
    except ImportError:
        raise BenchError("--tokenizer needs the transformers package (pip install transformers)") from None
    if not directory.is_dir():
        raise BenchError(f"--tokenizer {directory}: not a directory")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BenchError(f"--tokenizer {directory}: cannot load a tokenizer from it ({exc})") from None


class TokenCounter:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self._tokenizer = tokenizer

    def count(self, record: RequestRecord) -> None:
        source: TokenSource
        if record.usage_completion_tokens is not None:
            tokens, source = record.usage_completion_tokens, "usage"
        elif self._tokenizer is not None:
            tokens, source = len(self._tokenizer.encode(record.text, add_special_tokens=False)), "tokenizer"
        else:
            tokens, source = len(record.content_times), "chunks"
        record.output_tokens, record.token_source = tokens, source


def describe_source(sources: set[str]) -> tuple[str, str]:
    """The combined source of a set of counts ("usage", ..., or "mixed") and its sentence."""
    if not sources:
        return "none", "no request completed, so no tokens were counted"
    source = next(iter(sources)) if len(sources) == 1 else "mixed"
    return source, SOURCE_DESCRIPTIONS[source]
