"""Incremental detokenization on the three shipped tokenizers: streaming token by token (or in any
chunking) gives exactly the full decode, for spaces, accents, CJK and emoji."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from tests.support import paths

ROOT = paths.REPO_ROOT
sys.path.insert(0, str(ROOT / "templates" / "model_repo" / "shared"))

from streaming_detokenizer import (
    IncrementalDetokenizer,
    StreamStates,
    decode_keeping_leading_space,
)

TEXTS = [
    "Hello world, how are you today?",
    "  leading spaces and  double  spaces ",
    "Le modèle répond rapidement : très bien, merci !",
    "大型语言模型的推理服务 and 日本語のテキスト",
    "Deploy 🚀 then celebrate 🎉🎉 with 👩‍💻 and 🏳️‍🌈 flags",
    "Rare characters: 龍 鳳 🦀 🦑 ∮ ∯ ǅ",
    "line one\nline two\n\ttabbed",
]
NAMES = ["tiny-chat", "tiny-base", "tiny-sp"]
_TOKENIZERS = {}


def tokenizer(name: str):
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = AutoTokenizer.from_pretrained(
            str(ROOT / "examples" / "tokenizers" / name), local_files_only=True
        )
    return _TOKENIZERS[name]


def decoder(name: str, skip_special_tokens: bool = True):
    tok = tokenizer(name)
    return lambda sequences: tok.batch_decode(
        [list(s) for s in sequences], skip_special_tokens=skip_special_tokens
    )


def stream(
    name: str, ids: list[int], chunk_sizes: list[int] | None = None, skip_special_tokens: bool = True
) -> tuple[list[str], str]:
    detokenizer = IncrementalDetokenizer(decoder(name, skip_special_tokens))
    pieces, position, index = [], 0, 0
    while position < len(ids):
        size = chunk_sizes[index % len(chunk_sizes)] if chunk_sizes else 1
        pieces.append(detokenizer.push(ids[position : position + size]))
        position, index = position + size, index + 1
    pieces.append(detokenizer.finish())
    assert "".join(pieces) == detokenizer.text
    return pieces, detokenizer.text


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("text", TEXTS)
def test_token_by_token_equals_full_decode(name: str, text: str) -> None:
    ids = tokenizer(name).encode(text, add_special_tokens=False)
    pieces, streamed = stream(name, ids)
    assert streamed == tokenizer(name).decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in piece for piece in pieces), pieces


@pytest.mark.parametrize("name", NAMES)
def test_naive_decoding_is_actually_broken_on_these_texts(name: str) -> None:
    """Guards the test above: it must be exercising the failure modes, not texts that are easy."""
    tok = tokenizer(name)
    broken = 0
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        if "".join(tok.decode([i]) for i in ids) != tok.decode(ids):
            broken += 1
    assert broken >= 3


@pytest.mark.parametrize("name", ["tiny-chat", "tiny-sp"])
def test_special_tokens_in_the_stream_follow_skip_special_tokens(name: str) -> None:
    tok = tokenizer(name)
    ids = tok.encode("Hello world", add_special_tokens=True) + [tok.eos_token_id]
    for skip in (True, False):
        _, streamed = stream(name, ids, skip_special_tokens=skip)
        assert streamed == tok.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("name", ["tiny-chat", "tiny-sp"])
def test_held_back_character_is_emitted_when_its_last_byte_arrives(name: str) -> None:
    """The space before the crab is emitted at once; its 4 bytes wait until the last one arrives."""
    tok = tokenizer(name)
    ids = tok.encode("ok 🦀", add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(decoder(name))
    emitted = [detokenizer.push([i]) for i in ids]
    assert "".join(emitted) == "ok 🦀"
    assert emitted[-1] == "🦀"
    assert "".join(emitted[:-1]) == "ok " and emitted[-2] == ""


def test_finish_emits_an_incomplete_tail() -> None:
    tok = tokenizer("tiny-chat")
    ids = tok.encode("ok 🦀", add_special_tokens=False)[:-1]  # drop the last byte of the crab
    _, streamed = stream("tiny-chat", ids)
    assert streamed == tok.decode(ids)
    assert streamed.endswith("\ufffd")


ALPHABET = st.sampled_from(list("abc xyz.,!?éüßñ 大型语言 日本 🚀🎉👍🦀龍\n") + ["👩‍💻", " the", " model"])


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    text=st.lists(ALPHABET, min_size=1, max_size=30).map("".join),
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=5),
)
def test_any_chunking_of_any_text_equals_full_decode(name: str, text: str, chunk_sizes: list[int]) -> None:
    ids = tokenizer(name).encode(text, add_special_tokens=False)
    _, streamed = stream(name, ids, chunk_sizes)
    assert streamed == tokenizer(name).decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("name", NAMES)
def test_stateless_chunk_keeps_its_leading_space(name: str) -> None:
    tok = tokenizer(name)
    anchor = tok.encode("a", add_special_tokens=False)
    ids = tok.encode("Hello world", add_special_tokens=False)
    world = ids[-1]
    assert (
        tok.decode(ids[:-1]) + decode_keeping_leading_space(decoder(name), [world], anchor) == "Hello world"
    )
    assert decode_keeping_leading_space(decoder(name), [], anchor) == ""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stream_states_evict_least_recently_used_and_idle_entries() -> None:
    clock = FakeClock()
    states = StreamStates(max_streams=2, idle_seconds=10, clock=clock)

    def make() -> IncrementalDetokenizer:
        return IncrementalDetokenizer(decoder("tiny-chat"))

    a = states.get_or_create("a", make)
    states.get_or_create("b", make)
    assert states.get_or_create("a", make) is a  # reused, and now most recent
    states.get_or_create("c", make)  # evicts b, the least recently used
    assert "a" in states and "c" in states and "b" not in states
    clock.now = 5
    states.get_or_create("a", make)
    clock.now = 12  # c idle for 12 s > 10, a only 7 s
    states.get_or_create("d", make)
    assert "c" not in states and "a" in states and "d" in states
    with pytest.raises(ValueError):
        StreamStates(max_streams=0, idle_seconds=1)
