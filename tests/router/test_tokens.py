"""The router's prompt-length bound (generator/router/tokens.py): it must never be below the real
token count, or the router would pass a prompt Triton then refuses. Checked on the shipped
tokenizers and on a built byte-level tokenizer with normalizers that grow text, with random text."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from generator.router.protocol import ApiError
from generator.router.tokens import ModelTokenizer, byte_growth, check_prompt_bytes
from tests.support import paths

TOKENIZERS = paths.REPO_ROOT / "examples" / "tokenizers"
SHIPPED = ("tiny-chat", "tiny-base", "tiny-sp")

# Characters that normalizers grow (NFKC of U+FDFA is 18 characters; "İ" lowercases to two),
# special-token text, whitespace runs, and ordinary words.
TRICKY = ["\ufdfa", "İ", "ﬃ", "①", "<|begin|>", "<s>", "</s>", "  ", "\n", "the", "fox", "é", "🙂", "\u0958"]
text_strategy = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=8)), max_size=40).map("".join)


def load(name: str) -> Any:
    return AutoTokenizer.from_pretrained(str(TOKENIZERS / name), local_files_only=True)


def growing_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE behind NFKC + lowercase, with a prefix space: the worst growth we accept."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>", "</s>"]
    )
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 20], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    loaded = {name: load(name) for name in SHIPPED}
    loaded["growing"] = growing_tokenizer()
    return loaded


def test_growth_is_known_only_for_byte_level_bpe(tokenizers: dict[str, Any]) -> None:
    assert ModelTokenizer(tokenizers["tiny-chat"], True)._growth == 1.0
    assert ModelTokenizer(tokenizers["tiny-base"], True)._growth == 1.0
    assert ModelTokenizer(tokenizers["tiny-sp"], True)._growth is None  # Metaspace: counted exactly
    assert ModelTokenizer(tokenizers["growing"], True)._growth == 11.0 * 1.5 * 2


@pytest.mark.parametrize(
    ("pipeline", "growth"),
    [
        ({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}, 1.0),
        (
            {
                "model": {"type": "BPE"},
                "normalizer": {"type": "NFC"},
                "pre_tokenizer": {
                    "type": "Sequence",
                    "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel", "add_prefix_space": False}],
                },
            },
            3.0,
        ),
        (
            {
                "model": {"type": "BPE"},
                "normalizer": {"type": "Replace"},
                "pre_tokenizer": {"type": "ByteLevel"},
            },
            None,
        ),
        ({"model": {"type": "WordPiece"}, "pre_tokenizer": {"type": "ByteLevel"}}, None),
        ({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Metaspace"}}, None),
        ({"model": {"type": "BPE"}, "pre_tokenizer": None}, None),
    ],
)
def test_byte_growth_of_pipelines(pipeline: dict[str, Any], growth: float | None) -> None:
    assert byte_growth(pipeline) == growth


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy, special=st.booleans())
def test_bound_is_never_below_the_token_count(tokenizers: dict[str, Any], text: str, special: bool) -> None:
    for name in ("tiny-chat", "tiny-base", "growing"):
        tokenizer = ModelTokenizer(tokenizers[name], special)
        bound = tokenizer.token_bound(text, special)
        assert bound is not None
        count = len(tokenizers[name].encode(text, add_special_tokens=special))
        assert count <= bound, (name, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy, special=st.booleans())
def test_rust_core_encodes_like_transformers(tokenizers: dict[str, Any], text: str, special: bool) -> None:
    for name in SHIPPED:
        ours = ModelTokenizer(tokenizers[name], special)
        assert ours._encode(text, special) == list(tokenizers[name].encode(text, add_special_tokens=special))


def test_chat_prompt_counts_like_apply_chat_template(tokenizers: dict[str, Any]) -> None:
    raw = tokenizers["tiny-chat"]
    tokenizer = ModelTokenizer(raw, True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fox ﬃ."}]
    text, special = tokenizer.prompt_text(None, messages)
    expected = raw.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
    assert special is False and tokenizer._encode(text, special) == expected
    bound = tokenizer.token_bound(text, special)
    assert bound is not None and len(expected) <= bound


def test_long_prompts_are_counted_exactly_and_short_ones_not_at_all(tokenizers: dict[str, Any]) -> None:
    tokenizer = ModelTokenizer(tokenizers["tiny-chat"], True)
    assert tokenizer.token_bound("a" * 100, True) == 100 + tokenizer._specials[True]
    sp = ModelTokenizer(tokenizers["tiny-sp"], True)
    assert sp.token_bound("a" * 100, True) is None


def test_plain_text_leaves_the_bos_to_a_tokenizer_that_adds_it(tokenizers: dict[str, Any]) -> None:
    adds_bos = ModelTokenizer(tokenizers["growing"], True)  # its post-processor writes <s> first
    assert adds_bos.plain_text("<s>user: hi") == "user: hi"
    assert adds_bos.plain_text("user: hi") == "user: hi"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy, special=st.booleans())
def test_encoding_without_the_gil_gives_the_same_ids(
    tokenizers: dict[str, Any], text: str, special: bool
) -> None:
    for name in SHIPPED:
        ours = ModelTokenizer(tokenizers[name], special)
        assert ours._encode_without_gil(text, special) == ours._encode(text, special)


def test_a_long_prompt_is_encoded_without_stopping_the_event_loop(tokenizers: dict[str, Any]) -> None:
    """Four 1 MB prompts encoded at once: the loop keeps turning (issue 12: ``encode`` in a thread
    still held the GIL, about half a second per megabyte, all four in a row). Loose bound, the machine
    may be busy: blocked for seconds is the defect."""
    tokenizer = ModelTokenizer(tokenizers["tiny-chat"], True)
    prompt = "the quick brown fox jumps over the lazy dog " * 24000

    async def scenario() -> tuple[list[int], float]:
        encodes = asyncio.gather(*(tokenizer.encode(prompt, True) for _ in range(4)))
        worst = 0.0
        while not encodes.done():
            started = time.monotonic()
            await asyncio.sleep(0.005)
            worst = max(worst, time.monotonic() - started)
        return [len(ids) for ids in await encodes], worst

    counts, worst = asyncio.run(scenario())
    assert counts == [len(tokenizer._encode(prompt, True))] * 4
    assert worst < 1.0, f"the event loop stopped for {worst:.2f} s"


def test_a_prompt_over_the_byte_bound_is_refused_naming_the_limit() -> None:
    check_prompt_bytes("a" * 64, 4, 16, model="m", param="prompt")  # exactly at the bound
    check_prompt_bytes("é" * 32, 4, 16, model="m", param="prompt")  # 64 bytes in 32 characters
    with pytest.raises(ApiError) as refused:
        check_prompt_bytes("é" * 33, 4, 16, model="m", param="messages")
    error = refused.value
    assert (error.status, error.param, error.code) == (400, "messages", "context_length_exceeded")
    assert error.message == (
        "the prompt is 66 bytes; model 'm' accepts at most 64 bytes (4 tokens × 16 bytes), "
        "checked before tokenizing"
    )
