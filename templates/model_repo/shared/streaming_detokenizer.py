"""Turn a stream of token ids into text without losing spaces or splitting characters.

Why this exists (tensorrtllm_backend issues #112, #332, #34, #192): decoding each streamed token on
its own is wrong in two ways.

* SentencePiece-style tokenizers mark a word start with ``▁`` and their decoder strips the leading
  space of the first token, so ``decode([▁world])`` is ``"world"``: words run together.
* Byte-level BPE (and byte-fallback) tokenizers split a multibyte character over several tokens, so
  one token alone decodes to ``"\\ufffd"``: broken CJK and emoji.

:class:`IncrementalDetokenizer` decodes a small window of the accumulated tokens twice — the already
emitted part as context, and context plus the new tokens — and emits only the difference, holding back
a trailing incomplete character until the bytes that complete it arrive. The concatenation of what
it emits equals decoding all tokens at once.

This file is plain Python with no Triton import: the generator copies it into the ``1/`` directory
of every python model that detokenizes (postprocessing, tensorrt_llm_bls), and the tests import it
directly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

__all__ = [
    "DecodeBatch",
    "IncrementalDetokenizer",
    "StreamStates",
    "decode_keeping_leading_space",
]

# Decodes several token sequences at once (one string per sequence). Taking a batch lets a caller that
# decodes through another model (the BLS calls postprocessing) do one round trip per step.
DecodeBatch = Callable[[Sequence[Sequence[int]]], list[str]]

REPLACEMENT_CHARACTER = "\ufffd"


class IncrementalDetokenizer:
    """Per-stream decoder: :meth:`push` new token ids, get back only the new complete text.

    The window technique (also used by vLLM and HF's TextStreamer) keeps each step's cost bounded by
    the window, not by the length of the whole generation.
    """

    def __init__(self, decode: DecodeBatch) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        # tokens[_prefix:_read] were emitted already and are decoded again only as context, so the
        # first new token keeps its leading space; tokens[_read:] are not emitted yet (or partly).
        self._prefix = 0
        self._read = 0
        # characters of the current window's new text already emitted while its tail was incomplete
        self._emitted_in_window = 0
        self._text_parts: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._text_parts)

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the text they complete (possibly ``""`` while a character is partial)."""
        if len(token_ids) == 0:
            return ""
        self._tokens.extend(int(t) for t in token_ids)
        new_text = self._new_text()
        complete = new_text.rstrip(REPLACEMENT_CHARACTER)
        delta = complete[self._emitted_in_window :]
        if complete == new_text:
            # The window ends on a character boundary: slide it so the emitted tokens become context.
            self._prefix, self._read = self._read, len(self._tokens)
            self._emitted_in_window = 0
        else:
            self._emitted_in_window = max(self._emitted_in_window, len(complete))
        return self._emit(delta)

    def finish(self) -> str:
        """End of stream: emit whatever is still held back, even an undecodable tail."""
        if self._read == len(self._tokens):
            return ""
        delta = self._new_text()[self._emitted_in_window :]
        self._prefix, self._read = self._read, len(self._tokens)
        self._emitted_in_window = 0
        return self._emit(delta)

    def _new_text(self) -> str:
        context, full = self._decode([self._tokens[self._prefix : self._read], self._tokens[self._prefix :]])
        # With every decoder we ship against the context is a prefix of the full window; if a
        # decoder ever rewrote earlier text, cutting by length still never repeats emitted text.
        return full[len(context) :]

    def _emit(self, delta: str) -> str:
        if delta:
            self._text_parts.append(delta)
        return delta


def decode_keeping_leading_space(
    decode: DecodeBatch, token_ids: Sequence[int], anchor_ids: Sequence[int]
) -> str:
    """Decode one chunk on its own, keeping the leading space a SentencePiece decoder would strip.

    Used when a streamed chunk arrives without a request id, so no per-stream state can be found:
    decode ``anchor + chunk`` and remove the anchor's own text. A multibyte character split across
    chunks still cannot be repaired without state.
    """
    if len(token_ids) == 0:
        return ""
    anchored, anchor_alone = decode([[*anchor_ids, *token_ids], list(anchor_ids)])
    if anchored.startswith(anchor_alone):
        return anchored[len(anchor_alone) :]
    return decode([list(token_ids)])[0]


class StreamStates:
    """A bounded LRU of per-stream detokenizers with idle expiry.

    In an ensemble, every streamed token reaches postprocessing as a separate request and nothing
    says which one is the last, so state can never be released on completion: entries leave when the
    map is full (least recently used first) or after ``idle_seconds`` without a new token.
    """

    def __init__(
        self, max_streams: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {max_streams}")
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds}")
        self._max_streams = max_streams
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[IncrementalDetokenizer, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get_or_create(
        self, key: Hashable, create: Callable[[], IncrementalDetokenizer]
    ) -> IncrementalDetokenizer:
        now = self._clock()
        self._expire(now)
        entry = self._entries.pop(key, None)
        detokenizer = entry[0] if entry is not None else create()
        self._entries[key] = (detokenizer, now)
        while len(self._entries) > self._max_streams:
            self._entries.popitem(last=False)
        return detokenizer

    def _expire(self, now: float) -> None:
        # Entries are ordered by last use, so the idle ones are at the front.
        while self._entries:
            _, (_, last_used) = next(iter(self._entries.items()))
            if now - last_used <= self._idle_seconds:
                break
            self._entries.popitem(last=False)
