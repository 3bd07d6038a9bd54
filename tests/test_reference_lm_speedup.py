"""The reference engine's tokens are pinned: a faster language model must choose exactly the tokens
the corpus-continuing model chose when it was written (reference_lm.py before its speed-up).

EXPECTED was recorded by running these cases with that code; every case is a batch of requests
(prompt, sampling settings) run through the in-flight batcher, so batching, admission order,
greedy and sampled decoding (temperature, top-k, top-p, seeds), stop words, bad words (including
the fallback when every continuation of the text is banned), end_id with the natural length and
min_tokens, budgets that end near a multibyte character, prompt ids past the vocabulary, and a
vocabulary without a corpus are all covered. Long outputs are pinned by their length, first tokens
and a sha256 of all of them.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from tests.test_reference_engine_support import ENGINE_DIR

from .conftest import EXAMPLES

sys.path.insert(0, str(ENGINE_DIR))

from reference_kv import KvBlockPool  # noqa: E402
from reference_lm import (  # noqa: E402
    ReferenceLM,
    SamplingParams,
    SequenceState,
    VocabularyFacts,
    choose_tokens,
    read_vocabulary,
)
from reference_scheduler import BatcherSettings, EngineRequest, InflightBatcher  # noqa: E402

# Outputs longer than this are pinned by (length, first tokens, sha256) instead of in full.
SHORT = 64

SAMPLED = {
    "bench": {"temperature": 0.8, "top_k": 50, "top_p": 0.95},
    "k40": {"temperature": 0.7, "top_k": 40},
    "p90": {"temperature": 1.0, "top_p": 0.9},
    "hot_k5": {"temperature": 2.0, "top_k": 5},
    "p50": {"temperature": 1.3, "top_p": 0.5},
    "k_huge": {"temperature": 0.5, "top_k": 5000},
    "hot_p99": {"temperature": 3.0, "top_p": 0.99},
    "t1": {"temperature": 1.0, "top_k": 0, "top_p": 0.0, "seed": 3},  # greedy by TRT-LLM's rules
    "k1": {"temperature": 0.9, "top_k": 1},  # greedy
    "t0": {"temperature": 0.0, "top_k": 50},  # greedy
}

PROMPTS = {
    "question": "How does Triton serve a TensorRT-LLM engine?",
    "corpus": "The first token decides how fast a service feels. A person in a",
    "multibyte": "Streaming text is harder than it looks. Words like Gr",
    "japanese": "Words like Grüße or the name",
    "japanese_full": "Words like Grüße or the name 日本 must arrive intact",
    "unknown": "zebra quartz xylophone",
}


# ------------------------------------------------------------------------------------ the cases


def _vocab(name: str) -> VocabularyFacts:
    if name == "synthetic":  # a hand-made corpus with fragment runs, read as a ring
        rng = np.random.default_rng(5)
        fragments = frozenset(range(240, 290))
        corpus: list[int] = []
        for _ in range(60):
            corpus += [int(t) for t in rng.integers(4, 60, int(rng.integers(1, 6)))]
            if rng.random() < 0.4:
                corpus += [int(t) for t in rng.integers(240, 290, int(rng.integers(2, 5)))]
        return VocabularyFacts(
            vocab_size=300,
            special_ids=frozenset({0, 1, 2}),
            eos_id=1,
            pad_id=0,
            fragment_ids=fragments,
            corpus_ids=tuple(corpus),
            passage_starts=(0, 17, 90),
        )
    if name == "no-corpus":
        return VocabularyFacts(vocab_size=257, special_ids=frozenset({0, 256}), eos_id=256, pad_id=0)
    return read_vocabulary(str(EXAMPLES / "tokenizers" / name))


_MODELS: dict[tuple[str, int], ReferenceLM] = {}
_TOKENIZERS: dict[str, Tokenizer] = {}


def _model(name: str, seed: int) -> ReferenceLM:
    if (name, seed) not in _MODELS:
        _MODELS[name, seed] = ReferenceLM(_vocab(name), seed=seed)
    return _MODELS[name, seed]


def _encode(name: str, text: str) -> list[int]:
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = Tokenizer.from_file(str(EXAMPLES / "tokenizers" / name / "tokenizer.json"))
    return _TOKENIZERS[name].encode(text, add_special_tokens=False).ids


def _prompt(name: str, lm: ReferenceLM, spec) -> list[int]:
    if isinstance(spec, list):
        return spec
    kind, _, text = spec.partition(":")
    if kind == "text":
        return _encode(name, PROMPTS[text])
    if kind == "upto_fragment":  # ends inside a multibyte character
        ids = _encode(name, PROMPTS[text])
        first = next(n for n, i in enumerate(ids) if i in lm.vocab.fragment_ids)
        return ids[: first + 1]
    if kind == "corpus":  # a slice of the corpus itself: start:length
        start, length = (int(v) for v in text.split("+"))
        return list(lm.vocab.corpus_ids[start : start + length])
    raise ValueError(spec)


def _words(name: str, lm: ReferenceLM, spec):
    """Stop/bad words: texts encoded by the tokenizer, literal id tuples, or every fragment id."""
    if spec == "fragments":
        return tuple((i,) for i in sorted(lm.vocab.fragment_ids))
    if spec == "corpus_words":  # every word of the text except fragments: the text is always banned
        return tuple((i,) for i in sorted(set(lm.vocab.corpus_ids) - lm.vocab.fragment_ids))
    return tuple(tuple(_encode(name, w)) if isinstance(w, str) else tuple(w) for w in spec)


def _params(name: str, lm: ReferenceLM, settings: dict) -> SamplingParams:
    settings = dict(settings)
    for key in ("stop_words", "bad_words"):
        if key in settings:
            settings[key] = _words(name, lm, settings[key])
    if settings.get("end_id") == "eos":
        settings["end_id"] = lm.vocab.eos_id
    return SamplingParams(**settings)


def R(prompt, max_new_tokens, *presets, **settings):
    """One request of a case: a prompt spec, a budget, named sampling presets and extra settings."""
    merged: dict = {"max_new_tokens": max_new_tokens}
    for preset in presets:
        merged.update(SAMPLED[preset])
    merged.update(settings)
    return prompt, merged


CHAT = "tiny-chat"
CASES: dict[str, tuple[str, int, int, list]] = {
    # name: (tokenizer or vocabulary, weights seed, max_active, requests)
    "greedy_question": (CHAT, 0, 4, [R("text:question", 120)]),
    "greedy_corpus_long": (CHAT, 0, 4, [R("text:corpus", 400)]),
    "greedy_rules": (
        CHAT,
        0,
        8,
        [R("text:question", 40, p) for p in ("t1", "k1", "t0")] + [R("text:question", 40, temperature=0.0)],
    ),
    "sampled_presets": (
        CHAT,
        0,
        16,
        [R("text:question", 80, p, seed=s) for p in ("bench", "k40", "p90", "hot_k5", "p50") for s in (0, 1)],
    ),
    "sampled_more": (
        CHAT,
        3,
        16,
        [R("text:corpus", 80, p, seed=s) for p in ("k_huge", "hot_p99", "bench") for s in (2, 99)],
    ),
    "sampled_long": (CHAT, 0, 4, [R("text:corpus", 600, "bench", seed=5), R("text:question", 600, "hot_p99", seed=8)]),
    "bench_like_batch": (
        CHAT,
        0,
        32,
        [R([10 + i, 11, 12, 13], 150, *(("bench",) if i % 2 else ()), seed=i) for i in range(12)],
    ),
    "staggered_admission": (
        CHAT,
        1,
        3,
        [R("text:question", 20 + 7 * i, *(("p90",) if i % 3 == 1 else ("bench",) if i % 3 == 2 else ()), seed=i)
         for i in range(7)],
    ),
    "multibyte_budgets": (
        CHAT,
        0,
        8,
        [R("text:multibyte", n) for n in range(1, 6)] + [R("upto_fragment:japanese_full", n) for n in (1, 2, 3)],
    ),
    "multibyte_sampled": (
        CHAT,
        0,
        8,
        [R("text:multibyte", 60, "hot_p99", seed=s) for s in range(4)] + [R("upto_fragment:japanese_full", 30, "bench")],
    ),
    "inside_character_all_banned": (
        CHAT,
        0,
        4,
        [R("upto_fragment:japanese_full", 30, bad_words="fragments"),
         R("upto_fragment:japanese_full", 30, "bench", seed=4, bad_words="fragments")],
    ),
    "text_always_banned": (
        CHAT,
        0,
        4,
        [R("text:corpus", 40, bad_words="corpus_words"), R("text:corpus", 40, "p90", seed=2, bad_words="corpus_words")],
    ),
    "bad_words": (
        CHAT,
        0,
        4,
        [R("text:question", 60, bad_words=[" the"]),
         R("text:corpus", 60, bad_words=[" the cache", " in", [5]]),
         R("text:corpus", 60, "k40", seed=9, bad_words=[" the", " of the"])],
    ),
    "stop_words": (
        CHAT,
        0,
        4,
        [R("text:question", 200, stop_words=[" cache"]),
         R("text:corpus", 200, stop_words=[" the prefill", " memory"]),
         R("text:corpus", 200, "bench", seed=1, stop_words=[" token"], bad_words=[" the"])],
    ),
    "end_id_natural_length": (
        CHAT,
        0,
        4,
        [R("text:question", 2100, end_id="eos"), R("text:corpus", 2100, "bench", seed=3, end_id="eos"),
         R("text:corpus", 700, end_id="eos", min_tokens=650), R([7], 600, end_id=5, min_tokens=512)],
    ),
    "odd_prompts": (
        CHAT,
        0,
        8,
        [R([42], 50), R([5000, 70000, 2**31 - 1], 50), R([5000, 70000, 2**31 - 1], 50, "bench"),
         R("text:unknown", 50), R("corpus:600+6", 120), R("corpus:0+1", 30, "p50", seed=6), R([1, 1, 1], 30)],
    ),
    "tiny_sp": (
        "tiny-sp",
        0,
        8,
        [R("text:question", 100), R("text:multibyte", 100), R("text:japanese", 80, "bench", seed=2),
         R("upto_fragment:japanese_full", 10), R("upto_fragment:japanese_full", 10, bad_words="fragments"),
         R("text:corpus", 300, "p90", seed=1)],
    ),
    "tiny_base_other_seed": (
        "tiny-base",
        11,
        8,
        [R("text:question", 100), R("text:corpus", 100, "k40", seed=12), R("text:multibyte", 3)],
    ),
    "synthetic_ring": (
        "synthetic",
        2,
        8,
        [R([4, 5, 6], 200), R([250, 251], 60), R("corpus:0+3", 150, "bench", seed=1),
         R("corpus:40+8", 150, "hot_p99", seed=2), R([245], 12, bad_words="fragments"), R([300, 301], 2)],
    ),
    "no_corpus": (
        "no-corpus",
        4,
        4,
        [R([3, 4], 100), R([3, 4], 100, "bench", seed=1), R([255], 60, "p50", end_id=256), R([9], 50, bad_words=[[9, 9]])],
    ),
}


def run_case(name: str) -> list[list[int]]:
    vocab_name, seed, max_active, requests = CASES[name]
    lm = _model(vocab_name, seed)
    batcher = InflightBatcher(
        lm, KvBlockPool(4096, 16, True), BatcherSettings(max_active=max_active, cancellation_check_period_s=0.0)
    )
    outputs: list[list[int]] = []
    for n, (spec, settings) in enumerate(requests):
        tokens: list[int] = []
        outputs.append(tokens)

        class Sink:
            def __init__(self, into: list[int]) -> None:
                self.into = into

            def deliver(self, sequence, new, final):
                self.into.extend(new)
                return True

            def is_cancelled(self):
                return False

            def cancelled(self, sequence):
                raise AssertionError("cancelled")

            def failed(self, message):
                raise AssertionError(message)

        prompt = np.array(_prompt(vocab_name, lm, spec), np.int64).astype(np.int32)
        batcher.submit(EngineRequest(f"r{n}", prompt, _params(vocab_name, lm, settings)), Sink(tokens))
    while batcher.step():
        pass
    return outputs


def pinned(tokens: list[int]):
    """What EXPECTED holds for one output."""
    if len(tokens) <= SHORT:
        return list(tokens)
    digest = hashlib.sha256(np.asarray(tokens, dtype="<i8").tobytes()).hexdigest()[:24]
    return (len(tokens), list(tokens[:16]), digest)


# ------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(CASES))
def test_tokens_are_exactly_the_recorded_ones(name: str) -> None:
    assert [pinned(t) for t in run_case(name)] == EXPECTED[name]


def test_choose_tokens_on_hand_built_states() -> None:
    """choose_tokens called directly on sequences at odd points (one-token prompt, empty tail of
    generated tokens, budget of one), batched together in one call."""
    lm = _model(CHAT, 0)
    prompts = [[7], [5000], _encode(CHAT, PROMPTS["corpus"]), [1738], [1738, 111]]
    states = []
    for n, prompt in enumerate(prompts):
        for m, preset in enumerate(((), ("bench",), ("p90",))):
            settings = {"max_new_tokens": 1 + (n + m) % 3, "seed": n * 10 + m}
            for p in preset:
                settings.update(SAMPLED[p])
            states.append(SequenceState(np.array(prompt, np.int32), SamplingParams(**settings), natural_end=600))
    chosen = []
    for _ in range(3):
        tokens = choose_tokens(lm, states)
        chosen.append(tokens)
        for state, token in zip(states, tokens):
            state.generated.append(int(token))
    assert chosen == EXPECTED_DIRECT


# Recorded with reference_lm.py as of commit 41832db (before the speed-up).
EXPECTED: dict[str, list] = {'bad_words': [[708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491, 264, 1324,
                520, 414, 1084, 708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690,
                491, 264, 1324, 520, 414, 846, 38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94,
                1049, 445, 264, 1928],
               [630, 928, 1218, 1059, 1690, 491, 264, 1324, 520, 414, 268, 301, 75, 1302, 517, 820, 270, 90,
                271, 292, 294, 82, 305, 263, 74, 19, 480, 418, 811, 492, 313, 271, 299, 593, 757, 17, 295,
                268, 817, 277, 288, 1575, 268, 564, 584, 18, 84, 296, 292, 294, 82, 356, 278, 268, 1401, 19,
                434, 362, 84, 422],
               [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037, 89, 326, 295,
                264, 502, 1019, 502, 991, 74, 74, 17, 413, 76, 78, 669, 264, 1411, 837, 284, 309, 330, 84, 89,
                264, 1411, 267, 369, 512, 19, 710, 601, 278, 620, 293, 312, 437, 319, 331, 575, 38, 384, 410,
                76, 270]],
 'bench_like_batch': [(150,
                       [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                       '014beea621bd2ba674a1bd69'),
                      (150, [38, 384, 410, 76, 270, 88, 17, 356, 293, 403, 264, 728, 17, 295, 510, 602],
                       '351ebce289a875fd9b1f38b8'),
                      (150,
                       [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                       '014beea621bd2ba674a1bd69'),
                      (150,
                       [1218, 817, 1453, 332, 17, 277, 789, 374, 593, 344, 295, 1931, 268, 451, 367, 268],
                       'dbbd0f1a5b9c052731512700'),
                      (150,
                       [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                       '014beea621bd2ba674a1bd69'),
                      (150, [38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049, 445],
                       '96ea51eb404157f93ca72594'),
                      (150,
                       [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                       '014beea621bd2ba674a1bd69'),
                      (150,
                       [1218, 1059, 1690, 491, 264, 1324, 520, 414, 268, 301, 75, 1302, 517, 820, 270, 90],
                       '499081f1df29278491ceb7e9'),
                      (150,
                       [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                       '014beea621bd2ba674a1bd69'),
                      (150, [38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 275, 468, 881, 315, 332],
                       '4719ebc26f5045a558c278dc'),
                      (150,
                       [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                       '014beea621bd2ba674a1bd69'),
                      (150,
                       [1218, 1565, 451, 1453, 268, 454, 295, 564, 1385, 756, 593, 416, 32, 268, 850, 451],
                       '10b4790388bbaefb5bd95910')],
 'end_id_natural_length': [(1996,
                            [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                            'b3396420fbe335254ef62d00'),
                           (916,
                            [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                            'a3eabf832bfbac86fa67ba9d'),
                           (700,
                            [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                            '3e7837779fe0b963acc78cdd'),
                           (600, [38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049, 445],
                            'd278506b0c0fb039ecb971d6')],
 'greedy_corpus_long': [(400, [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                         '0c252bbb817bb353faae1af5')],
 'greedy_question': [(120, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                      '1bf37434c171bbb5c156cb4b')],
 'greedy_rules': [[708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491, 264, 1324,
                   520, 414, 268, 301, 75, 1302, 517, 820, 270, 90, 271, 292, 294, 82, 305, 263, 74, 19, 480,
                   418, 811, 492],
                  [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491, 264, 1324,
                   520, 414, 268, 301, 75, 1302, 517, 820, 270, 90, 271, 292, 294, 82, 305, 263, 74, 19, 480,
                   418, 811, 492],
                  [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491, 264, 1324,
                   520, 414, 268, 301, 75, 1302, 517, 820, 270, 90, 271, 292, 294, 82, 305, 263, 74, 19, 480,
                   418, 811, 492],
                  [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491, 264, 1324,
                   520, 414, 268, 301, 75, 1302, 517, 820, 270, 90, 271, 292, 294, 82, 305, 263, 74, 19, 480,
                   418, 811, 492]],
 'inside_character_all_banned': [[906, 38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049,
                                  445, 264, 1928, 578, 312, 1697, 19, 1218, 817, 1453, 332, 17, 277, 789],
                                 [1514, 482, 263, 670, 264, 1963, 334, 312, 1940, 264, 873, 315, 519, 19,
                                  1218, 1695, 262, 70, 465, 1327, 1634, 17, 268, 875, 18, 870, 416, 262, 70,
                                  1017]],
 'multibyte_budgets': [[576], [576, 299], [576, 299, 264], [576, 299, 264, 287], [576, 299, 264, 287, 358],
                       [111], [111, 275], [111, 275, 350]],
 'multibyte_sampled': [[1190, 1840, 436, 38, 384, 833, 334, 571, 1590, 1840, 268, 416, 312, 270, 88, 17, 959,
                        482, 89, 499, 1057, 482, 263, 1369, 482, 89, 499, 297, 1088, 1840, 1621, 38, 384, 410,
                        1962, 1504, 764, 434, 1488, 79, 778, 482, 1927, 1218, 620, 293, 220, 38, 453, 434,
                        362, 84, 422, 908, 38, 308, 482, 965, 434, 362],
                       [576, 838, 434, 267, 297, 300, 1923, 434, 1488, 451, 1696, 918, 1026, 482, 1081, 38,
                        1754, 434, 196, 708, 84, 595, 564, 263, 74, 1631, 1218, 620, 293, 449, 648, 271, 444,
                        482, 89, 1506, 434, 1488, 1609, 708, 84, 595, 1854, 354, 830, 1467, 1840, 268, 1945,
                        482, 263, 996, 38, 548, 1517, 482, 263, 390, 452, 1878],
                       [495, 482, 672, 708, 1304, 482, 263, 706, 708, 1399, 434, 1928, 331, 1632, 1840, 268,
                        1491, 482, 1841, 1840, 217, 482, 1842, 434, 267, 1750, 1840, 1671, 1218, 736, 1175,
                        708, 907, 1840, 1684, 403, 1419, 434, 267, 297, 415, 1052, 708, 84, 382, 434, 362,
                        948, 708, 84, 595, 564, 652, 482, 89, 1439, 38, 340, 482, 61],
                       [28, 708, 1618, 482, 1494, 482, 1522, 482, 263, 670, 264, 202, 434, 1928, 331, 1033,
                        433, 1840, 268, 416, 312, 1542, 867, 755, 396, 1840, 268, 416, 36, 38, 1965, 434, 362,
                        823, 708, 1838, 1840, 528, 1840, 1670, 482, 885, 405, 1898, 1800, 708, 567, 1948, 434,
                        1928, 1368, 434, 1928, 1950, 1840, 268, 1740, 1218, 833, 454],
                       [111, 275, 350, 89, 730, 393, 331, 89, 324, 89, 17, 295, 268, 437, 324, 271, 1568, 987,
                        614, 275, 350, 89, 330, 84, 89, 410, 758, 390, 452, 344]],
 'no_corpus': [(100, [77, 130, 144, 168, 45, 49, 116, 66, 205, 66, 41, 66, 147, 13, 38, 44],
                'd58af44fc479e28b99f4f846'),
               (100, [141, 130, 80, 186, 247, 74, 107, 173, 48, 179, 195, 171, 139, 34, 190, 80],
                'aca5ebd5da1979030031921a'),
               [227, 24, 249, 207, 76, 141, 101, 35, 222, 226, 142, 58, 43, 118, 8, 58, 129, 148, 153, 192,
                149, 191, 93, 172, 99, 230, 140, 68, 169, 172, 207, 158, 54, 46, 38, 201, 28, 17, 10, 59, 33,
                129, 194, 29, 146, 17, 148, 163, 85, 85, 85, 85, 85, 85, 85, 155, 79, 65, 166, 17],
               [159, 159, 94, 143, 186, 217, 117, 198, 205, 247, 151, 54, 44, 148, 187, 222, 71, 105, 10, 165,
                170, 75, 37, 124, 221, 35, 147, 61, 141, 44, 148, 122, 239, 104, 186, 13, 81, 239, 104, 235,
                126, 38, 80, 210, 202, 151, 54, 17, 225, 114]],
 'odd_prompts': [[708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491, 264, 1324,
                  520, 414, 268, 301, 75, 1302, 517, 820, 270, 90, 271, 292, 294, 82, 305, 263, 74, 19, 480,
                  418, 811, 492, 313, 271, 299, 593, 757, 17, 295, 268, 817, 277],
                 [38, 384, 410, 76, 270, 88, 17, 356, 293, 403, 264, 728, 17, 295, 510, 602, 293, 312, 573,
                  1396, 278, 268, 1928, 353, 819, 353, 332, 311, 93, 281, 374, 19, 482, 263, 670, 264, 1963,
                  334, 312, 1940, 264, 873, 315, 519, 19, 1218, 1695, 262, 70, 465],
                 [1218, 833, 334, 571, 268, 614, 366, 293, 856, 17, 295, 268, 517, 804, 374, 268, 834, 31,
                  356, 1343, 88, 756, 268, 861, 454, 414, 343, 1020, 88, 268, 875, 18, 870, 416, 262, 70,
                  1017, 268, 351, 323, 17, 295, 365, 384, 331, 268, 411, 276, 283, 374],
                 [38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049, 445, 264, 1928, 578,
                  312, 1697, 19, 1218, 817, 1453, 332, 17, 277, 789, 374, 593, 344, 295, 1931, 268, 451, 367,
                  268, 292, 74, 92, 323, 415, 331, 292, 81, 621, 19, 1218, 833],
                 (120, [334, 19, 1218, 1059, 1690, 491, 264, 1324, 520, 414, 268, 301, 75, 1302, 517, 820],
                  'cd36c69a4484ca018e0c0464'),
                 [384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049, 445, 264, 1928, 578, 312,
                  1697, 19, 1218, 817, 1453, 332, 17, 277, 789, 374, 593],
                 [482, 263, 670, 264, 1963, 334, 312, 1940, 264, 873, 315, 519, 19, 1218, 1695, 262, 70, 465,
                  1327, 1634, 17, 268, 875, 18, 870, 416, 262, 70, 1017, 268]],
 'sampled_long': [(600, [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                   '3530145961ddfa33f86694f3'),
                  (600, [38, 1722, 482, 263, 670, 707, 1840, 1796, 434, 1928, 331, 763, 482, 263, 1462, 834],
                   '46e7e183ce916f55104dfe13')],
 'sampled_more': [(80, [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                   '8024b11f52b5cec85a032d54'),
                  (80, [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                   '8024b11f52b5cec85a032d54'),
                  (80, [1879, 482, 89, 499, 297, 520, 57, 708, 1382, 482, 263, 788, 1218, 1059, 18, 870],
                   'a71fe790fdb68ceaa35b8fd3'),
                  (80, [630, 833, 1606, 1840, 306, 1840, 215, 708, 1472, 482, 1227, 708, 793, 708, 84, 595],
                   'e1146abf8fdf74585c6197e6'),
                  (80, [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                   '8024b11f52b5cec85a032d54'),
                  (80, [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                   '8024b11f52b5cec85a032d54')],
 'sampled_presets': [(80, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                      '930cbed7597f03c464872111'),
                     (80, [434, 362, 84, 422, 1444, 1003, 288, 73, 615, 774, 873, 88, 403, 264, 362, 1025],
                      '87448f71448b2910d37e497f'),
                     (80, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                      '930cbed7597f03c464872111'),
                     (80, [434, 362, 84, 422, 1444, 1003, 288, 73, 615, 774, 873, 88, 403, 264, 362, 1025],
                      '87448f71448b2910d37e497f'),
                     (80, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                      '930cbed7597f03c464872111'),
                     (80, [434, 1488, 451, 1696, 413, 268, 1411, 323, 384, 607, 332, 804, 374, 268, 385, 427],
                      '3f858908cf882b37a1cac1b9'),
                     (80, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                      '930cbed7597f03c464872111'),
                     (80, [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295],
                      '1108ae4ccda47c0a21fe11f1'),
                     (80, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                      '930cbed7597f03c464872111'),
                     (80, [38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049, 445],
                      'd82ce85dd2152644e35e7c83')],
 'staggered_admission': [[434, 1928, 331, 264, 630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372,
                          92, 407, 1037],
                         [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295,
                          268, 617, 408, 516, 299, 1649, 263, 319, 451, 88, 19],
                         [434, 362, 84, 422, 1444, 1003, 288, 73, 615, 774, 873, 88, 403, 264, 362, 1025, 419,
                          31, 613, 526, 344, 406, 618, 268, 1524, 1797, 17, 613, 1411, 272, 74, 84, 85, 300],
                         [434, 1928, 331, 264, 630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372,
                          92, 407, 1037, 89, 326, 295, 264, 502, 1019, 502, 991, 74, 74, 17, 413, 76, 78, 669,
                          264, 1411, 837, 284, 309, 330],
                         [482, 263, 670, 264, 1963, 334, 312, 1940, 264, 873, 315, 519, 19, 1218, 1695, 262,
                          70, 465, 1327, 1634, 17, 268, 875, 18, 870, 416, 19, 710, 77, 265, 268, 617, 410,
                          76, 270, 88, 353, 264, 292, 74, 92, 275, 468, 881, 315, 332, 367, 365],
                         [1840, 268, 380, 328, 374, 491, 1411, 295, 268, 615, 491, 1636, 17, 268, 834, 295,
                          268, 617, 408, 516, 299, 1649, 263, 319, 451, 88, 19, 1218, 1565, 451, 1453, 268,
                          454, 295, 564, 1385, 756, 593, 416, 32, 268, 850, 451, 820, 270, 90, 271, 17, 405,
                          414, 264, 337, 82, 269, 390],
                         [434, 1928, 331, 264, 630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372,
                          92, 407, 1037, 89, 326, 295, 264, 502, 1019, 502, 991, 74, 74, 17, 413, 76, 78, 669,
                          264, 1411, 837, 284, 309, 330, 84, 89, 264, 1411, 267, 369, 512, 19, 710, 601, 278,
                          620, 293, 312, 437, 319, 331, 268, 1625, 295, 331]],
 'stop_words': [(111, [708, 84, 595, 564, 263, 74, 312, 264, 301, 313, 334, 19, 1218, 1059, 1690, 491],
                 '40231be604ce1947dbd63de1'),
                [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037, 89, 326, 295,
                 264, 502, 1019, 502, 991, 74, 74, 17, 413, 76, 78, 669, 264, 1411, 837, 284, 309, 330, 84,
                 89, 264, 1411, 267, 369, 512, 19, 710, 601, 278, 620, 293, 312, 437, 319, 331, 268, 1625,
                 295, 331, 268, 834],
                [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037, 89, 326, 295,
                 264, 502, 1019, 502, 991, 74, 74, 17, 413, 76, 78, 669, 264, 1411, 837, 284, 309, 330, 84,
                 89, 264, 1411, 267, 369, 512, 19, 710, 601, 278, 620, 293]],
 'synthetic_ring': [(200, [270, 247, 47, 23, 26, 24, 45, 11, 47, 27, 283, 275, 242, 257, 50, 283],
                     'c0585a59b691f7ba9e5f759c'),
                    [49, 30, 288, 242, 253, 35, 26, 242, 247, 14, 40, 46, 17, 19, 13, 54, 48, 271, 264, 273,
                     273, 7, 57, 35, 54, 14, 7, 52, 284, 284, 283, 5, 47, 241, 265, 256, 261, 15, 33, 22, 20,
                     49, 247, 254, 36, 29, 13, 48, 255, 247, 33, 32, 20, 32, 240, 255, 286, 283, 51, 59],
                    (150, [30, 288, 242, 253, 35, 26, 242, 247, 14, 40, 46, 17, 19, 13, 54, 48],
                     '2a803fcdf7959f5b6d7f782f'),
                    (150, [149, 164, 54, 14, 7, 140, 49, 10, 31, 27, 34, 40, 8, 54, 172, 54],
                     '356e1c7d3e87681304f123b8'),
                    [42, 25, 22, 48, 6, 14, 81, 54, 14, 7, 52, 68], [54, 48]],
 'text_always_banned': [[389, 1310, 919, 1316, 1525, 1177, 1590, 1991, 54, 972, 611, 469, 553, 1732, 1939, 97,
                         555, 983, 1513, 1805, 1470, 548, 439, 1042, 1351, 1073, 720, 951, 990, 1699, 1168,
                         1831, 1390, 645, 879, 1563, 1462, 980, 1225, 1541],
                        [1790, 1532, 446, 920, 314, 1766, 1322, 1828, 25, 1314, 1300, 210, 1677, 1322, 871,
                         1543, 224, 286, 832, 1592, 1725, 836, 357, 401, 1060, 1174, 721, 930, 1415, 221, 790,
                         893, 768, 735, 791, 1018, 1336, 1650, 370, 1392]],
 'tiny_base_other_seed': [(100, [38, 384, 410, 76, 270, 88, 353, 264, 292, 74, 92, 614, 262, 94, 1049, 445],
                           'f2698cd307a7bc3388deb88b'),
                          (100,
                           [630, 331, 226, 63, 133, 126, 424, 290, 17, 367, 264, 267, 372, 92, 407, 1037],
                           '41db5b1d422ab9a5a95b6d23'),
                          [576, 299, 264]],
 'tiny_sp': [(100, [1573, 397, 536, 439, 1491, 1867, 261, 703, 535, 681, 456, 397, 597, 304, 320, 495],
              '33db19ed61d00f218fde4f0c'),
             (100, [448, 815, 571, 494, 397, 815, 1504, 488, 308, 769, 397, 815, 909, 427, 492, 568],
              '241607ca49ffcd9f7223f657'),
             (80, [347, 233, 154, 168, 233, 159, 175, 404, 475, 319, 809, 517, 456, 319, 449, 319],
              '462bdc3a16d9cb9be7254a50'),
             [154, 168, 233, 159, 175, 404, 475, 319, 809, 517],
             [738, 1573, 397, 536, 439, 1491, 1867, 261, 703, 535],
             (300, [724, 456, 347, 299, 338, 543, 1363, 494, 393, 396, 499, 322, 527, 1086, 319, 451],
              '64a6747b6b8e4c04b1cab715')]}
EXPECTED_DIRECT: list[list[int]] = [[38, 482, 482, 434, 434, 708, 630, 630, 630, 111, 111, 111, 275, 275, 275],
 [384, 263, 263, 1488, 1488, 84, 331, 331, 331, 275, 275, 275, 350, 350, 350],
 [336, 670, 670, 451, 451, 73, 226, 575, 226, 938, 350, 350, 89, 89, 1318]]
