"""The model's tokenizer, used by the router for three things: the input-length check that answers
400 before anything reaches Triton, token ids for prefix-aware routing, and usage counts when the
target does not return ``num_input_tokens``/``num_output_tokens`` (the LLM-API model never does). For
LLM-API models it also renders a chat request's messages to text with the chat template.

Loaded from the model's local ``tokenizer_dir`` (never a model hub). Fast tokenizers run in Rust and
a short prompt costs tens of microseconds, so short prompts are tokenized on the event loop; long
ones go to a thread (the Rust side releases the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from generator.errors import RuntimeSetupError

__all__ = ["THREAD_OVER_CHARS", "ModelTokenizer", "TokenizerLike", "load_tokenizer"]

# Prompts longer than this many characters are tokenized off the event loop.
THREAD_OVER_CHARS = 8192


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


class ModelTokenizer:
    def __init__(self, tokenizer: TokenizerLike, add_special_tokens: bool) -> None:
        self._tok = tokenizer
        self._add_special = add_special_tokens
        eos = tokenizer.eos_token_id
        self.end_ids = frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])

    def _prompt_ids(self, prompt: str | None, messages: list[dict[str, Any]] | None) -> list[int]:
        if messages is not None:
            ids = self._tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            # transformers 5 returns a BatchEncoding; 4.x returned the list itself.
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        return list(self._tok.encode(prompt or "", add_special_tokens=self._add_special))

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        """The chat template applied as text: what a model that takes plain text (LLM-API) gets."""
        text = str(self._tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        # The model tokenizes this text with special tokens on (tensorrt_llm's default); a template
        # that writes the BOS itself would then start with two. Leave the BOS to the tokenizer.
        bos = getattr(self._tok, "bos_token", None)
        if bos and text.startswith(bos) and self._adds_bos():
            text = text[len(bos) :]
        return text

    def _adds_bos(self) -> bool:
        bos_id = getattr(self._tok, "bos_token_id", None)
        ids = self._tok.encode("", add_special_tokens=True)
        return bos_id is not None and bool(ids) and ids[0] == bos_id

    async def prompt_ids(self, prompt: str | None, messages: list[dict[str, Any]] | None) -> list[int]:
        size = len(prompt or "") + sum(len(str(m.get("content", ""))) for m in messages or [])
        if size > THREAD_OVER_CHARS:
            return await asyncio.to_thread(self._prompt_ids, prompt, messages)
        return self._prompt_ids(prompt, messages)

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False)) if text else 0


TokenizerLoader = Callable[[str], TokenizerLike]
