"""The reference engine's words read as text (issue 17): it continues the passages of
reference_corpus.py, tokenized with the model's own tokenizer, and stays deterministic."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.support.paths import EXAMPLES
from tests.support.reference_engine import ENGINE_DIR

sys.path.insert(0, str(ENGINE_DIR))

from reference_corpus import PASSAGES
from reference_kv import KvBlockPool
from reference_lm import ReferenceLM, SamplingParams, read_vocabulary
from reference_scheduler import BatcherSettings, EngineRequest, InflightBatcher

CORPUS_WORDS = set(re.findall(r"\w+", " ".join(PASSAGES).lower()))


@pytest.fixture(scope="module", params=["tiny-chat", "tiny-sp"])
def model(request) -> tuple[ReferenceLM, Tokenizer]:
    directory = EXAMPLES / "tokenizers" / request.param
    return ReferenceLM(read_vocabulary(str(directory)), seed=0), Tokenizer.from_file(
        str(directory / "tokenizer.json")
    )


def generate(lm: ReferenceLM, prompt: list[int], **params) -> list[int]:
    batcher = InflightBatcher(
        lm, KvBlockPool(512, 8, True), BatcherSettings(max_active=16, cancellation_check_period_s=0.0)
    )
    tokens: list[int] = []

    class Sink:
        def deliver(self, sequence, new, final):
            tokens.extend(new)
            return True

        def is_cancelled(self):
            return False

        def cancelled(self, sequence):
            pass

        def failed(self, message):
            raise AssertionError(message)

    batcher.submit(EngineRequest("r", np.array(prompt, np.int32), SamplingParams(**params)), Sink())
    while batcher.step():
        pass
    return tokens


def readable_share(text: str) -> float:
    words = re.findall(r"\w+", text.lower())
    return sum(w in CORPUS_WORDS for w in words) / max(len(words), 1)


@pytest.mark.parametrize(
    "params",
    [{}, {"temperature": 0.7, "top_k": 40, "seed": 1}, {"temperature": 1.0, "top_p": 0.9, "seed": 7}],
)
def test_answers_are_made_of_the_corpus_words(model, params) -> None:
    lm, tokenizer = model
    prompt = tokenizer.encode("How does Triton serve a TensorRT-LLM engine?").ids
    text = tokenizer.decode(generate(lm, prompt, max_new_tokens=96, **params))
    assert readable_share(text) > 0.9, text
    assert "\ufffd" not in text


def test_the_corpus_reaches_multibyte_words_and_never_cuts_a_character(model) -> None:
    lm, tokenizer = model
    prompt = tokenizer.encode("Streaming text is harder than it looks. A single token can be half of a").ids
    seen_non_ascii = False
    for budget in range(40, 120, 7):
        tokens = generate(lm, prompt, max_new_tokens=budget, temperature=0.8, top_k=20, seed=budget)
        text = tokenizer.decode(tokens)
        assert "\ufffd" not in text, (budget, text)
        seen_non_ascii |= any(ord(ch) > 127 for ch in text)
    assert seen_non_ascii


def test_greedy_continues_a_passage_word_for_word(model) -> None:
    lm, tokenizer = model
    prompt = tokenizer.encode("The first token decides how fast a service").ids
    text = tokenizer.decode(generate(lm, prompt, max_new_tokens=12))
    assert text.strip().startswith("feels"), text


def test_sampling_still_matters(model) -> None:
    lm, tokenizer = model
    prompt = tokenizer.encode("Serving").ids
    runs = {
        tuple(generate(lm, prompt, max_new_tokens=64, temperature=1.0, top_k=50, seed=s)) for s in range(6)
    }
    assert len(runs) > 1
    greedy = generate(lm, prompt, max_new_tokens=64)
    assert greedy == generate(lm, prompt, max_new_tokens=64, temperature=1.0, top_k=1, seed=3)
