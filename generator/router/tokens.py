"""The model's tokenizer, used by the router for: the input-length check that answers 400 before
anything reaches Triton, token ids for prefix-aware routing, and usage counts when the target does
not return ``num_input_tokens``/``num_output_tokens`` (the LLM-API model never does). For LLM-API
models it also renders a chat request's messages to text with the chat template. On the
engine-direct path (``generator/router/engine.py``) it is the whole text side of the engine:
prompt ids, ``end_id``/``pad_id``, stop-word ids, and streaming detokenization
(:meth:`ModelTokenizer.stream_decoder`).

Loaded from the model's local ``tokenizer_dir`` (never a model hub). The length check usually needs
no tokenizing: for byte-level BPE (GPT-2, Llama 3, Qwen, GPT-OSS tokenizers) a prompt has at most
as many tokens as its normalized text has bytes, so a prompt whose byte count (times the
normalizer's worst growth) is within the limit passes at once. That matters at concurrency 1, where
the router runs between requests with cold caches and one cold encode costs a few hundred
microseconds. Other prompts are encoded by the Rust core.

Long prompts must not stop the event loop (issue 12: each 1 MB prompt held ``/health`` and every
stream for half a second). Two things see to it. :func:`check_prompt_bytes` refuses, before any
tokenizing, a prompt with more UTF-8 bytes than ``max_input_len × prompt_bytes_per_token``. And a
long prompt is encoded in a thread through ``Tokenizer.encode_batch``: the ``tokenizers`` binding
releases the GIL around ``encode_batch`` (``py.allow_threads`` in ``bindings/python/src/
tokenizer.rs``) but not around ``encode``, so ``encode`` in a thread still freezes the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from generator.errors import RuntimeSetupError
from generator.router.protocol import ApiError

__all__ = [
    "THREAD_OVER_CHARS",
    "ModelTokenizer",
    "StreamDecoder",
    "TokenizerLike",
    "WindowDecoder",
    "byte_growth",
    "check_prompt_bytes",
    "load_tokenizer",
]

# Prompts longer than this many characters are tokenized off the event loop, without the GIL.
THREAD_OVER_CHARS = 8192
_MAX_UTF8_BYTES_PER_CHAR = 4


def check_prompt_bytes(
    text: str, max_input_len: int, bytes_per_token: int, *, model: str, param: str
) -> None:
    """Refuse a prompt that its size alone puts far over the model's input limit, before any
    tokenizing: more UTF-8 bytes than ``max_input_len × bytes_per_token`` (the setting
    ``prompt_bytes_per_token``; real text averages 3-5 bytes per token)."""
    limit = max_input_len * bytes_per_token
    if len(text) * _MAX_UTF8_BYTES_PER_CHAR <= limit:
        return  # within the limit whatever its characters: no need to measure it
    size = len(text.encode())
    if size > limit:
        raise ApiError(
            400,
            f"the prompt is {size} bytes; model {model!r} accepts at most {limit} bytes "
            f"({max_input_len} tokens × {bytes_per_token} bytes), checked before tokenizing",
            param=param,
            code="context_length_exceeded",
        )


class TokenizerLike(Protocol):
    eos_token_id: Any

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def apply_chat_template(self, conversation: list[dict[str, Any]], **kwargs: Any) -> Any: ...


def load_tokenizer(directory: str) -> TokenizerLike:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RuntimeSetupError(f"router: cannot load the tokenizer in {directory}: {exc}") from None


# How many UTF-8 bytes one input byte can become under each normalizer (Unicode UAX #15 §9 gives
# the maximum expansion of the four normal forms in UTF-8; lowercasing grows e.g. "İ" 2 → 3 bytes).
_NORMALIZER_GROWTH = {
    "NFC": 3.0,
    "NFD": 3.0,
    "NFKC": 11.0,
    "NFKD": 11.0,
    "Lowercase": 1.5,
    "Strip": 1.0,
    "StripAccents": 1.0,
}


def byte_growth(pipeline: dict[str, Any]) -> float | None:
    """For a ``tokenizer.json`` pipeline in which every token stands for at least one byte of the
    normalized text (a BPE model over a ByteLevel pre-tokenizer), the most tokens one input byte can
    yield; ``None`` for any other pipeline, whose prompts are always counted exactly."""
    model = pipeline.get("model") or {}
    if model.get("type") != "BPE":
        return None
    pre = pipeline.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not byte_level or any(
        s.get("type") not in ("ByteLevel", "Split", "Digits", "Punctuation") for s in steps
    ):
        return None
    growth = 1.0
    normalizer = pipeline.get("normalizer")
    if normalizer is not None:
        parts = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
        for part in parts:
            factor = _NORMALIZER_GROWTH.get(part.get("type", ""))
            if factor is None:
                return None
            growth *= factor
    if any(s.get("add_prefix_space") for s in byte_level):
        growth *= 2  # a space may be added before every piece that added tokens split off
    return growth


class ModelTokenizer:
    def __init__(self, tokenizer: TokenizerLike, add_special_tokens: bool) -> None:
        self._tok = tokenizer
        self._add_special = add_special_tokens
        eos = tokenizer.eos_token_id
        self.end_ids = frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])
        # A fast tokenizer's Rust core: encoding through it skips transformers' Python layers.
        self._rust = getattr(tokenizer, "backend_tokenizer", None)
        self._growth: float | None = None
        self._specials = {False: 0, True: 0}
        if self._rust is not None:
            self._growth = byte_growth(json.loads(self._rust.to_str()))
            self._specials[True] = self._rust.num_special_tokens_to_add(False)
        # The BOS text when encoding with special tokens puts the BOS first (see plain_text).
        bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
        self._leading_bos = (
            bos if bos and bos_id is not None and self._encode("", True)[:1] == [bos_id] else None
        )
        # What the preprocessing model sends the engine (its PromptEncoder): the ids of the eos and
        # pad tokens; None when the tokenizer names none (the engine then keeps its own default).
        self.end_id = _single_id(tokenizer, getattr(tokenizer, "eos_token", None))
        self.pad_id = _single_id(tokenizer, getattr(tokenizer, "pad_token", None))
        if self.pad_id is None:
            self.pad_id = self.end_id

    def prompt_text(self, prompt: str | None, messages: list[dict[str, Any]] | None) -> tuple[str, bool]:
        """The text the model encodes and whether special tokens are added to it: a chat request's
        messages through the chat template (which writes its own special tokens), else the prompt."""
        if messages is not None:
            text = self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return str(text), False
        return prompt or "", self._add_special

    def token_bound(self, text: str, special: bool) -> int | None:
        """An upper bound on ``len(self.encode(text, special))`` that costs no tokenizing, or None
        when this tokenizer offers none. Byte-level BPE gives every token at least one byte."""
        if self._growth is None:
            return None
        return int(self._growth * len(text.encode())) + self._specials[special]

    def _encode(self, text: str, special: bool) -> list[int]:
        if self._rust is not None:
            return self._rust.encode(text, add_special_tokens=special).ids
        return list(self._tok.encode(text, add_special_tokens=special))

    def _encode_without_gil(self, text: str, special: bool) -> list[int]:
        if self._rust is not None:  # encode_batch releases the GIL; encode does not
            return self._rust.encode_batch([text], add_special_tokens=special)[0].ids
        return list(self._tok.encode(text, add_special_tokens=special))  # a slow tokenizer holds it

    async def encode(self, text: str, special: bool) -> list[int]:
        if len(text) > THREAD_OVER_CHARS:
            return await asyncio.to_thread(self._encode_without_gil, text, special)
        return self._encode(text, special)

    def plain_text(self, templated: str) -> str:
        """A chat template's output as a model that takes plain text (LLM-API) should get it. The
        model tokenizes with special tokens on (tensorrt_llm's default); a template that writes the
        BOS itself would then start with two, so the BOS is left to the tokenizer."""
        bos = self._leading_bos
        return templated[len(bos) :] if bos and templated.startswith(bos) else templated

    def count(self, text: str, special: bool = False) -> int:
        return len(self._encode(text, special)) if text or special else 0

    def word_ids(self, word: str) -> list[int]:
        """A stop word as the engine matches it: its ids without special tokens (as preprocessing)."""
        return self._encode(word, False)

    def decode(self, ids: list[int]) -> str:
        """Ids to text as the postprocessing model decodes them (special tokens skipped)."""
        if self._rust is not None:
            return self._rust.decode(ids, skip_special_tokens=True)
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for one response stream: feed token ids, get back the new exact text."""
        if self._rust is not None:
            return _RustStream(self._rust, self.decode)
        return WindowDecoder(self.decode)


class StreamDecoder(Protocol):
    def step(self, ids: list[int]) -> str:
        """New token ids in; the text they complete out ("" while a character is incomplete)."""

    def finish(self) -> str:
        """At the end of the stream: text still held back (an incomplete character decodes to
        U+FFFD, as a whole decode of the same ids would), else ""."""


class _RustStream:
    """``tokenizers.decoders.DecodeStream``: the Rust core keeps a prefix window per stream and
    returns text only once it is complete (a multibyte character split over tokens comes out whole,
    a SentencePiece word keeps its leading space). One call per response, whatever its token count.
    A step whose ids end inside a character returns None for all of them; their text comes with
    the step that completes the character, or from :meth:`finish`."""

    __slots__ = ("_decode", "_emitted", "_ids", "_pending", "_step", "_tokenizer")

    def __init__(self, tokenizer: Any, decode: Callable[[list[int]], str]) -> None:
        from tokenizers.decoders import DecodeStream

        self._tokenizer = tokenizer
        self._step = DecodeStream(skip_special_tokens=True).step
        self._decode = decode
        self._ids: list[int] = []
        self._emitted = 0  # characters handed out
        self._pending = False

    def step(self, ids: list[int]) -> str:
        self._ids.extend(ids)
        text = self._step(self._tokenizer, ids)
        if text is None:
            self._pending = True
            return ""
        self._pending = False
        self._emitted += len(text)
        return text

    def finish(self) -> str:
        if not self._pending:
            return ""
        self._pending = False
        text = self._decode(self._ids)[self._emitted :]
        self._emitted += len(text)
        return text


class WindowDecoder:
    """For a tokenizer without a Rust core: decode a window (the last emitted tokens as context,
    then the new ones) and emit what the new tokens add, holding back a trailing incomplete
    character (U+FFFD) until its bytes arrive. Each step costs the window, not the whole text."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._prefix = 0  # tokens[_prefix:_read] were emitted: context for the next step
        self._read = 0

    def step(self, ids: list[int]) -> str:
        self._tokens.extend(ids)
        context = self._decode(self._tokens[self._prefix : self._read])
        text = self._decode(self._tokens[self._prefix :])
        if len(text) <= len(context) or text.endswith("\ufffd"):
            return ""  # nothing complete yet
        self._prefix, self._read = self._read, len(self._tokens)
        return text[len(context) :]

    def finish(self) -> str:
        if self._read == len(self._tokens):
            return ""
        context = self._decode(self._tokens[self._prefix : self._read])
        text = self._decode(self._tokens[self._prefix :])
        self._prefix = self._read = len(self._tokens)
        return text[len(context) :]


def _single_id(tokenizer: TokenizerLike, token: Any) -> int | None:
    if not isinstance(token, str):
        return None
    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    value = convert(token) if convert is not None else None
    return int(value) if isinstance(value, int) else None


TokenizerLoader = Callable[[str], TokenizerLike]
