"""Prompt, chat and word-list encoding for the preprocessing model, without any Triton dependency.

The tensor layouts follow the upstream text preprocessing (tensorrtllm_backend ``all_models/
inflight_batcher_llm/preprocessing``) so that the ``tensorrt_llm`` model (C++ backend or our reference
engine) receives exactly what it expects:

* prompt ids right-padded with the pad id to the longest row, plus the real length per row;
* stop/bad words as ``[batch, 2, L]``: row 0 the concatenated ids of all words, row 1 the cumulative
  end offset of each word, padded with 0 and -1; ``[batch, 2, 0]`` when the request has none;
* embedding bias as one vocabulary-length vector per row, ``[batch, 0]`` when the request has none.

Our extension is the chat path: a ``MESSAGES`` row (a JSON list of ``{"role", "content"}``) is rendered
with the tokenizer's own chat template and ``add_generation_prompt=True`` instead of using ``QUERY``.
Upstream applies no chat template to text prompts at all, so a chat client had to pre-render prompts.

Copied by the generator into ``<model>_preprocessing/1/`` next to ``model.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from model_parameters import RequestError

__all__ = ["PromptEncoder", "pad_rows"]


class PromptEncoder:
    """Encodes the text of one request row into the ids the engine consumes."""

    def __init__(
        self, tokenizer, tokenizer_dir: str, add_special_tokens: bool, max_input_len: int | None
    ) -> None:
        self._tokenizer = tokenizer
        self._tokenizer_dir = tokenizer_dir
        self._add_special_tokens = add_special_tokens
        self._max_input_len = max_input_len
        self.end_id = self._single_id(tokenizer.eos_token, "eos_token")
        self.pad_id = self._single_id(tokenizer.pad_token, "pad_token")
        # len() counts added special tokens, which vocab_size leaves out; a bias must cover them too.
        self.vocab_size = len(tokenizer)

    def _single_id(self, token: str | None, what: str) -> int:
        if token is None:
            raise ValueError(
                f"the tokenizer in '{self._tokenizer_dir}' defines no {what}; set it in tokenizer_config.json"
            )
        token_id = self._tokenizer.convert_tokens_to_ids(token)
        unknown = token_id == self._tokenizer.unk_token_id and token != self._tokenizer.unk_token
        if token_id is None or unknown:
            raise ValueError(
                f"the tokenizer in '{self._tokenizer_dir}': {what} {token!r} is not in its vocabulary"
            )
        return int(token_id)

    def encode_query(self, query: str) -> list[int]:
        ids = self._tokenizer.encode(query, add_special_tokens=self._add_special_tokens)
        return self._checked(ids)

    def encode_messages(self, messages_json: str) -> list[int]:
        messages = parse_messages(messages_json)
        if not self._tokenizer.chat_template:
            raise RequestError(
                f"the tokenizer in '{self._tokenizer_dir}' has no chat template, so chat requests (MESSAGES) "
                "cannot be served: use a tokenizer directory whose tokenizer_config.json has a chat_template "
                "(often the unquantized sibling of this checkpoint), or send a plain text prompt"
            )
        try:
            prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # noqa: BLE001  (jinja2 errors, raise_exception() in the template)
            raise RequestError(
                f"the chat template of '{self._tokenizer_dir}' rejected the messages: {error}"
            ) from None
        # The template writes the special tokens (bos, role markers) itself; adding them again would
        # double the bos token, which is also what apply_chat_template(tokenize=True) avoids.
        ids = self._tokenizer.encode(prompt, add_special_tokens=False)
        return self._checked(ids)

    def _checked(self, ids: Sequence[int]) -> list[int]:
        if len(ids) == 0:
            raise RequestError("the prompt is empty: send some text (or messages) to continue from")
        if self._max_input_len is not None and len(ids) > self._max_input_len:
            raise RequestError(
                f"the prompt is {len(ids)} tokens long, more than this model's max_input_len of "
                f"{self._max_input_len}: shorten the prompt or raise models[].max_input_len in the stack spec"
            )
        return [int(i) for i in ids]

    def word_lists(self, rows: Sequence[Sequence[str]] | None, batch_size: int) -> np.ndarray:
        """Stop or bad words of every row as ``[batch, 2, L]`` int32."""
        if rows is None:
            return np.empty((batch_size, 2, 0), dtype=np.int32)
        flat_rows: list[list[int]] = []
        offset_rows: list[list[int]] = []
        for words in rows:
            flat: list[int] = []
            offsets: list[int] = []
            for word in words:
                ids = self._tokenizer.encode(word, add_special_tokens=False) if word else []
                if not ids:
                    continue
                flat.extend(int(i) for i in ids)
                offsets.append(len(flat))
            flat_rows.append(flat)
            offset_rows.append(offsets)
        width = max(1, max(len(flat) for flat in flat_rows))
        packed = np.zeros((len(flat_rows), 2, width), dtype=np.int32)
        packed[:, 1, :] = -1
        for row, (flat, offsets) in enumerate(zip(flat_rows, offset_rows)):
            packed[row, 0, : len(flat)] = flat
            packed[row, 1, : len(offsets)] = offsets
        return packed

    def embedding_bias(
        self, words: Sequence[Sequence[str]] | None, weights: np.ndarray | None, batch_size: int
    ) -> np.ndarray:
        """One vocabulary-length bias vector per row: each word's weight is added to each of its ids."""
        if words is None or weights is None:
            return np.empty((batch_size, 0), dtype=np.float32)
        bias = np.zeros((len(words), self.vocab_size), dtype=np.float32)
        for row, (row_words, row_weights) in enumerate(zip(words, weights)):
            if len(row_words) != len(row_weights):
                raise RequestError(
                    f"EMBEDDING_BIAS_WORDS has {len(row_words)} words but EMBEDDING_BIAS_WEIGHTS has "
                    f"{len(row_weights)} weights in row {row}; send one weight per word"
                )
            for word, weight in zip(row_words, row_weights):
                for token_id in self._tokenizer.encode(word, add_special_tokens=False) if word else []:
                    bias[row, int(token_id)] += float(weight)
        return bias


def parse_messages(messages_json: str) -> list[dict[str, str]]:
    """Validate a ``MESSAGES`` row: a non-empty JSON array of ``{"role": str, "content": str}``."""
    try:
        messages = json.loads(messages_json)
    except json.JSONDecodeError as error:
        raise RequestError(f"MESSAGES is not valid JSON ({error.msg} at position {error.pos})") from None
    expected = 'MESSAGES must be a non-empty JSON array of {"role": ..., "content": ...} objects'
    if not isinstance(messages, list) or not messages:
        raise RequestError(expected)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"{expected}; item {index} has no string 'role'")
        if not isinstance(message.get("content"), str):
            raise RequestError(f"{expected}; item {index} has no string 'content'")
    return messages


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id rows to the longest: ``([batch, L] int32, lengths [batch, 1] int32)``."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
    lengths = np.array([[len(row)] for row in rows], dtype=np.int32)
    return ids, lengths
