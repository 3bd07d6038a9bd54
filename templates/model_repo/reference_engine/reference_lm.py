"""The tritonstack reference engine's language model: small, deterministic, pure numpy.

This is a CPU stand-in for a TensorRT-LLM engine, not a real LLM. It exists so the whole serving
stack (ensembles, BLS, router, exporter, disaggregated prefill/decode) runs and can be tested on
a machine without a GPU. What it guarantees:

* Same weights seed + prompt + request seed + sampling settings => same tokens, on any server
  process, whatever else is batched alongside. Weights and hidden states hold small integers
  stored as float32, so every matmul is exact and independent of BLAS blocking or batch size.
* Resumable: the next token depends only on the last two tokens, the absolute position and a
  random number derived from (request seed, position). A decode server that is handed the prompt
  and the first token (disaggregated serving) continues exactly where the context server stopped.
* It reads as text: it continues the passages of ``reference_corpus.py``, tokenized with the
  model's own tokenizer when it loads. The candidates for the next token are what follows the
  longest tail of the sequence (up to ``CORPUS_CONTEXT`` tokens) found in that text; they score
  ``corpus_bonus`` above every other token, and the random weights below order the candidates and
  the rest, so seeds, temperature, top-k and top-p still choose among real alternatives. A sampled
  token off the text is followed by the text again from the longest tail that matches, or from the
  start of a passage.
* It never emits a special token of the tokenizer, nor a piece of a character except as the text
  continues it: inside a multibyte character only the text's own next token is allowed, and a
  character is not begun when the token budget would end it half-way. It ends a sequence itself only by the
  documented *natural length* rule (see :func:`natural_length`), so budgets up to
  ``NATURAL_LENGTH_MIN`` tokens, and any budget with ``min_tokens`` equal to it, are honoured
  exactly (benchmarks rely on that).

Only numpy and the standard library are imported: this file runs unchanged inside the stock NGC
Triton container's python backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from reference_corpus import PASSAGES

__all__ = [
    "CHARACTER_CONTEXT",
    "CORPUS_CONTEXT",
    "ENGINE_NAME",
    "NATURAL_LENGTH_MIN",
    "NATURAL_LENGTH_SPAN",
    "ReferenceEngineError",
    "ReferenceLM",
    "SamplingParams",
    "SequenceState",
    "VocabularyFacts",
    "choose_tokens",
    "natural_length",
    "prompt_digest",
    "read_vocabulary",
    "uniform_for",
]

ENGINE_NAME = "tritonstack reference engine"

# A sequence ends "on its own" (as if the model produced end_id) after a number of generated tokens
# derived from the prompt: NATURAL_LENGTH_MIN + (hash(weights seed, prompt) % NATURAL_LENGTH_SPAN),
# i.e. in [512, 2048). Budgets below 512 tokens therefore always run to the end exactly.
NATURAL_LENGTH_MIN = 512
NATURAL_LENGTH_SPAN = 1536

HIDDEN_SIZE = 32
POSITION_PERIOD = 61  # prime, so greedy loops over (prev, last) pairs are broken up by position
# Integer weights in these ranges keep every logit below 2**24 in magnitude: float32 sums are exact.
_LAST_RANGE = 7
_PREV_RANGE = 3
_POS_RANGE = 3
_OUT_RANGE = 7
# Logits are integers of magnitude ~100; this brings them to a softmax with a few nats of spread.
LOGIT_SCALE = 1.0 / 40.0
# How far back the corpus is matched: a few tokens, so the text branches where its phrases meet and
# seeds lead to different answers; further inside a multibyte character, so that only the text's
# own next piece can follow (a character is at most 4 bytes, each piece at least one).
CORPUS_CONTEXT = 4
CHARACTER_CONTEXT = 8
# How far above the best other token the corpus's continuations score, in nats on top of the
# vocabulary's log-size: at temperature 1 the sampler leaves the text about once in e**5 ≈ 150 tokens.
CORPUS_MARGIN_NATS = 5

_MASK64 = (1 << 64) - 1
# How many distinct sequence tails the model remembers the corpus candidates of.
_TAIL_CACHE_SIZE = 1 << 14
# From how many greedy sequences on the text their candidates are scored as one array.
_BATCHED_GREEDY = 4


class ReferenceEngineError(Exception):
    """A request or configuration the reference engine cannot serve; the message is for the user."""


# --------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class VocabularyFacts:
    """What the engine needs to know about the tokenizer: vocabulary size and special tokens."""

    vocab_size: int
    special_ids: frozenset[int]
    eos_id: int | None
    pad_id: int | None
    # Tokens that are only part of a character (a lone byte of a multibyte UTF-8 sequence): a real
    # model emits them in valid runs; this one picks tokens independently, so it avoids them and
    # its text stays readable.
    fragment_ids: frozenset[int] = frozenset()
    # The passages of reference_corpus.py as this tokenizer encodes them, one after the other, and
    # the index of each passage's first token; empty when the tokenizers library is missing.
    corpus_ids: tuple[int, ...] = ()
    passage_starts: tuple[int, ...] = ()


def read_vocabulary(tokenizer_dir: str) -> VocabularyFacts:
    """Read ``tokenizer.json`` (and ``tokenizer_config.json`` when present) without transformers.

    Loading transformers in the engine's process would add seconds to every model load; the JSON
    files carry everything needed: the vocabulary (dict for BPE/WordPiece, list for Unigram), the
    added tokens with their ``special`` flag, and the eos/pad token names.
    """
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    try:
        with open(path, encoding="utf-8") as handle:
            tokenizer = json.load(handle)
    except FileNotFoundError:
        raise ReferenceEngineError(
            f"tokenizer_dir {tokenizer_dir!r} has no tokenizer.json; the reference engine reads the "
            "vocabulary from it (save the tokenizer with a fast tokenizer: tokenizer.save_pretrained)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ReferenceEngineError(f"cannot read {path}: {exc}") from None

    ids_by_text: dict[str, int] = {}
    max_id = -1
    vocab = (tokenizer.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        ids_by_text.update({str(k): int(v) for k, v in vocab.items()})
        max_id = max(vocab.values(), default=-1)
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]; the id is the index
        ids_by_text.update({str(entry[0]): i for i, entry in enumerate(vocab)})
        max_id = len(vocab) - 1
    special: set[int] = set()
    for added in tokenizer.get("added_tokens") or []:
        token_id = int(added["id"])
        ids_by_text[str(added["content"])] = token_id
        max_id = max(max_id, token_id)
        if added.get("special", False):
            special.add(token_id)
    if max_id < 0:
        raise ReferenceEngineError(f"{path} holds no vocabulary (model.vocab is empty)")

    config = _read_tokenizer_config(tokenizer_dir)
    for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and entry.get("special", False):
            special.add(int(token_id))
    eos_id = _special_token_id(config.get("eos_token"), ids_by_text)
    pad_id = _special_token_id(config.get("pad_token"), ids_by_text)
    special.update(
        i for i in (eos_id, pad_id, _special_token_id(config.get("bos_token"), ids_by_text)) if i is not None
    )
    vocab_size = max_id + 1
    if len(special) >= vocab_size:
        raise ReferenceEngineError(f"{path}: every token is special; nothing left to generate")
    corpus_ids, passage_starts = _tokenize_corpus(path, special)
    return VocabularyFacts(
        vocab_size=vocab_size,
        special_ids=frozenset(special),
        eos_id=eos_id,
        pad_id=pad_id,
        fragment_ids=frozenset(_fragment_ids(tokenizer, ids_by_text) - special),
        corpus_ids=corpus_ids,
        passage_starts=passage_starts,
    )


def _tokenize_corpus(path: str, special: set[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The passages as the model's tokenizer encodes them. The ``tokenizers`` library (the Rust
    core of transformers, present wherever the preprocessing model runs) loads in a fraction of a
    second, where transformers would take seconds; without it the model's words are random."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return (), ()
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
        # A tokenizer.json this version of tokenizers cannot read: the vocabulary above still serves.
        return (), ()
    text = " ".join(PASSAGES)
    encoding = tokenizer.encode(text, add_special_tokens=False)
    kept = [(i, span) for i, span in zip(encoding.ids, encoding.offsets) if i not in special]
    ids = [i for i, _ in kept]
    offsets = [span for _, span in kept]
    starts, char = [], 0
    for passage in PASSAGES:
        first = next((n for n, (_, end) in enumerate(offsets) if end > char), None)
        if first is not None:
            starts.append(first)
        char += len(passage) + 1
    return tuple(ids), tuple(sorted(set(starts)))


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet: each byte is written as one printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(code): b for b, code in chars.items()}


def _fragment_ids(tokenizer: dict, ids_by_text: dict[str, int]) -> set[int]:
    """Token ids whose text is not valid UTF-8 on its own (byte-level pieces, <0xNN> byte fallbacks)."""
    fragments = {i for text, i in ids_by_text.items() if len(text) == 6 and text.startswith("<0x") and text.endswith(">")}
    kinds = json.dumps([tokenizer.get("decoder"), tokenizer.get("pre_tokenizer")])
    if '"ByteLevel"' not in kinds:
        return fragments
    alphabet = _byte_level_alphabet()
    for text, token_id in ids_by_text.items():
        try:
            bytes(alphabet[ch] for ch in text).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            if all(ch in alphabet for ch in text):
                fragments.add(token_id)
    return fragments


def _read_tokenizer_config(tokenizer_dir: str) -> dict:
    path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ReferenceEngineError(f"cannot read {path}: {exc}") from None
    return config if isinstance(config, dict) else {}


def _special_token_id(entry: object, ids_by_text: dict[str, int]) -> int | None:
    if isinstance(entry, dict):  # older configs: {"content": "</s>", ...}
        entry = entry.get("content")
    if isinstance(entry, str):
        return ids_by_text.get(entry)
    return None


# --------------------------------------------------------------------------------------- the model


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def uniform_for(seed: int, position: int) -> float:
    """The random number used to sample the token at ``position``: a pure function, so resumable."""
    mixed = _splitmix64(_splitmix64(seed & _MASK64) ^ (position & _MASK64))
    return (mixed >> 11) / float(1 << 53)


def prompt_digest(prompt: np.ndarray) -> bytes:
    """A stable digest of a prompt's token ids (the same in every process)."""
    return hashlib.sha256(np.ascontiguousarray(prompt, dtype="<i4").tobytes()).digest()


def natural_length(weights_seed: int, prompt: np.ndarray) -> int:
    """After how many generated tokens the model would produce end_id by itself."""
    digest = int.from_bytes(prompt_digest(prompt)[:8], "little")
    return NATURAL_LENGTH_MIN + _splitmix64(digest ^ (weights_seed & _MASK64)) % NATURAL_LENGTH_SPAN


class ReferenceLM:
    """logits(next | prev, last, position) = (E_last[last] + E_prev[prev] + E_pos[position % P]) @ W."""

    def __init__(self, vocab: VocabularyFacts, seed: int) -> None:
        self.vocab = vocab
        self.seed = int(seed)
        size = vocab.vocab_size
        rng = np.random.default_rng([self.seed & _MASK64, size])
        self._emb_last = rng.integers(-_LAST_RANGE, _LAST_RANGE + 1, (size, HIDDEN_SIZE)).astype(np.float32)
        self._emb_prev = rng.integers(-_PREV_RANGE, _PREV_RANGE + 1, (size, HIDDEN_SIZE)).astype(np.float32)
        self._emb_pos = rng.integers(-_POS_RANGE, _POS_RANGE + 1, (POSITION_PERIOD, HIDDEN_SIZE)).astype(
            np.float32
        )
        self._out = rng.integers(-_OUT_RANGE, _OUT_RANGE + 1, (HIDDEN_SIZE, size)).astype(np.float32)
        # Special tokens are never sampled: end_id is produced only by the natural length rule.
        banned = np.zeros(size, dtype=bool)
        banned[sorted(vocab.special_ids | vocab.fragment_ids)] = True
        self.never_sampled = banned
        self._continuations = _continuations(vocab)
        # The table's entries as arrays, one after the other (tokens ascending within an entry), and
        # where each key's entry lies in them; per tail seen, its candidates (see _candidates_after).
        spans: dict[tuple[int, ...], tuple[int, int]] = {}
        tokens: list[int] = []
        counts: list[int] = []
        pieces: list[int] = []
        for key, entry in self._continuations.items():
            spans[key] = (len(tokens), len(tokens) + len(entry))
            for token in sorted(entry):
                tokens.append(token)
                counts.append(entry[token][0])
                pieces.append(entry[token][1])
        self._spans = spans
        self._all_tokens = np.array(tokens, dtype=np.int64)
        self._all_extra = 10.0 * (np.array(counts, dtype=np.float32) - 1)  # the score frequency adds
        self._all_pieces = np.array(pieces, dtype=np.int64)
        # Their output weights: a candidate's logit is its row here times the hidden state.
        self._all_out_rows = np.ascontiguousarray(self._out.T)[self._all_tokens % size]
        self._entries: dict[int, _Candidates] = {}  # by where the entry starts, made when first needed
        self._by_tail: dict[tuple[int, ...], _Candidates | None] = {}
        self._fragments = vocab.fragment_ids
        # Added to a logits row, -inf where a token is never sampled and 0 elsewhere (exact).
        self._never_mask = np.where(banned, -np.inf, 0.0).astype(np.float32)
        self.corpus_bonus = float(round((math.log(size) + CORPUS_MARGIN_NATS) / LOGIT_SCALE))
        corpus = hashlib.sha256(np.asarray(vocab.corpus_ids, dtype="<i4").tobytes()).hexdigest()[:8]
        self.fingerprint = hashlib.sha256(
            f"{ENGINE_NAME}|seed={self.seed}|vocab={size}|special={sorted(vocab.special_ids)}|corpus={corpus}".encode()
        ).hexdigest()[:16]

    def continuations(self, tail: list[int]) -> dict[int, tuple[int, int]]:
        """What the corpus puts after the longest matching end of ``tail``: token id → (how often,
        how many character pieces in a row start with it). Passage starts when nothing matches."""
        for length in range(min(len(tail), CHARACTER_CONTEXT), 0, -1):
            found = self._continuations.get(tuple(tail[-length:]))
            if found is not None:
                return found
        return self._continuations.get((), {})

    def logits(self, prev: np.ndarray, last: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Exact integer-valued float32 logits, shape [batch, vocab]."""
        # Prompt ids past the vocabulary are served, as the C++ engine path serves them (its request
        # validation checks only end_id against the vocabulary: LlmRequest::validate,
        # https://github.com/NVIDIA/TensorRT-LLM/blob/119c6e60e65e5ecec4e97afdb6ea584f674aed24/cpp/tensorrt_llm/batch_manager/llmRequest.cpp),
        # and NVIDIA's benchmark_core_model.py sends random ids up to INT32_MAX; here they wrap around.
        return self._hidden(prev, last, positions) @ self._out

    def _hidden(self, prev: np.ndarray, last: np.ndarray, positions: np.ndarray) -> np.ndarray:
        size = self._emb_last.shape[0]
        return self._hidden_rows(prev % size, last % size, positions % POSITION_PERIOD)

    def _hidden_rows(self, prev, last, positions) -> np.ndarray:
        """Hidden states from ids already reduced to rows of the embeddings (arrays or lists)."""
        return self._emb_last[last] + self._emb_prev[prev] + self._emb_pos[positions]

    def _candidates_after(self, key: tuple[int, ...]) -> _Candidates | None:
        """:meth:`continuations` of ``key`` as arrays, remembered per key (a bounded cache)."""
        try:
            return self._by_tail[key]
        except KeyError:
            pass
        span = None
        for length in range(min(len(key), CHARACTER_CONTEXT), 0, -1):
            span = self._spans.get(key[-length:])
            if span is not None:
                break
        else:
            span = self._spans.get(())
        found = None
        if span is not None:
            found = self._entries.get(span[0])
            if found is None:
                found = self._entries[span[0]] = _Candidates(self, *span)
        if len(self._by_tail) >= _TAIL_CACHE_SIZE:
            self._by_tail.clear()
        self._by_tail[key] = found
        return found


def _continuations(vocab: VocabularyFacts) -> dict[tuple[int, ...], dict[int, tuple[int, int]]]:
    """Every run of up to CHARACTER_CONTEXT corpus tokens → the tokens after it (the corpus read as a
    ring), with counts and the length of the run of character pieces each one begins."""
    ids = vocab.corpus_ids
    size = len(ids)
    if not size:
        return {}
    fragment = [i in vocab.fragment_ids for i in ids]
    pieces = [0] * size  # pieces[j]: character pieces in a row from j on
    for j in range(size - 1, -1, -1):
        pieces[j] = (1 + (pieces[j + 1] if j + 1 < size else 0)) if fragment[j] else 0
    table: dict[tuple[int, ...], dict[int, tuple[int, int]]] = {}

    def add(key: tuple[int, ...], at: int) -> None:
        entry = table.setdefault(key, {})
        count, _ = entry.get(ids[at], (0, 0))
        entry[ids[at]] = (count + 1, pieces[at])

    for j in range(size):
        following = (j + 1) % size
        for length in range(1, min(CHARACTER_CONTEXT, size) + 1):
            add(tuple(ids[(j - length + 1 + k) % size] for k in range(length)), following)
    for start in vocab.passage_starts:
        add((), start)
    return table


class _Candidates:
    """One entry of the continuation table as arrays (views of the model's), tokens in ascending
    order (the order np.argmax breaks ties in): ids, ``10 * (count - 1)`` as float32 (the score the
    text's frequency adds), the character pieces each begins, and the tokens' output weights."""

    __slots__ = ("extra", "max_pieces", "only", "out_rows", "pieces", "start", "tokens")

    def __init__(self, lm: ReferenceLM, start: int, stop: int) -> None:
        self.tokens = lm._all_tokens[start:stop]
        self.extra = lm._all_extra[start:stop]
        self.pieces = lm._all_pieces[start:stop]
        self.out_rows = lm._all_out_rows[start:stop]
        self.max_pieces = int(self.pieces.max())
        self.start = start  # where the model's arrays hold this entry; -1: they do not (a part of one)
        self.only = int(self.tokens[0]) if stop - start == 1 else None  # the one candidate, if so

    def usable(self, left: int) -> _Candidates | None:
        """The candidates a budget of ``left`` more tokens lets begin (None when none does): a
        character is begun only when the budget lets it finish."""
        if self.max_pieces <= left:
            return self
        keep = self.pieces <= left
        if not keep.any():
            return None
        part = object.__new__(_Candidates)
        part.tokens, part.extra, part.pieces = self.tokens[keep], self.extra[keep], self.pieces[keep]
        part.out_rows = self.out_rows[keep]
        part.max_pieces = int(part.pieces.max())
        part.start = -1
        part.only = int(part.tokens[0]) if part.tokens.size == 1 else None
        return part


# --------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings, already validated."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 0
    min_tokens: int = 0
    end_id: int | None = None
    stop_words: tuple[tuple[int, ...], ...] = ()
    bad_words: tuple[tuple[int, ...], ...] = ()

    @property
    def greedy(self) -> bool:
        # TRT-LLM decodes greedily when temperature is 0, top_k is 1, or neither top_k nor top_p is set.
        return self.temperature <= 0.0 or self.top_k == 1 or (self.top_k <= 0 and not 0.0 < self.top_p < 1.0)


@dataclass
class SequenceState:
    """The token history of one sequence and why it stopped; shared by both serving paths."""

    prompt: np.ndarray
    params: SamplingParams
    natural_end: int
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "length" | "stop" | "end" | "context_done" | "cancelled" | "failed"

    @property
    def position(self) -> int:
        """Absolute position of the next token."""
        return len(self.prompt) + len(self.generated)

    def last_two(self) -> tuple[int, int]:
        tokens = self.tail(2)
        if len(tokens) == 1:
            return tokens[0], tokens[0]
        return tokens[0], tokens[1]

    def tail(self, count: int) -> list[int]:
        if count <= 0:
            return []
        from_generated = self.generated[-count:]
        missing = count - len(from_generated)
        if missing <= 0:
            return list(from_generated)
        return [int(t) for t in self.prompt[-missing:]] + list(from_generated)

    def append(self, token: int) -> str | None:
        """Record one generated token; return the finish reason if the sequence is now complete."""
        self.generated.append(int(token))
        count = len(self.generated)
        params = self.params
        for word in params.stop_words:
            # TRT-LLM keeps the stop word's tokens in the output.
            if count >= len(word) and tuple(self.generated[-len(word) :]) == word:
                self.finish_reason = "stop"
                return self.finish_reason
        if count >= params.max_new_tokens:
            self.finish_reason = "length"
        elif params.end_id is not None and count >= max(self.natural_end, params.min_tokens):
            self.finish_reason = "end"  # the next token would be end_id, which is not put in the output
        return self.finish_reason

    def banned_now(self) -> list[int]:
        """Bad words whose prefix is the sequence's tail: their last token is banned at this step."""
        banned = []
        for word in self.params.bad_words:
            if len(word) == 1 or self.tail(len(word) - 1) == list(word[:-1]):
                banned.append(word[-1])
        return banned


def choose_tokens(lm: ReferenceLM, sequences: list[SequenceState]) -> list[int]:
    """The next token of every sequence, computed as one batch.

    The tokens are those of the plain formulation (kept as the oracle of
    tests/reference_engine/test_lm_speedup.py): one logits row per sequence, the corpus's usable candidates
    scored ``corpus_bonus`` above the row's maximum (ordered by their own logits, damped, and how
    often the text has them; the only choice inside a multibyte character), special tokens and
    fragments and bad words set to -inf, then greedy argmax or sampling. A greedy sequence with a
    candidate that is not banned always takes the best candidate (every other token scores below
    all of them, and the row's maximum and the bonus add the same to each), so for those only the
    candidates' own logits are computed; the rest get their whole row.
    """
    if not sequences:
        return []
    count = len(sequences)
    chosen: list[int] = [0] * count
    prev: list[int] = []
    last: list[int] = []
    positions: list[int] = []
    size = lm.vocab.vocab_size
    fragments = lm._fragments
    fast: list[tuple[int, _Candidates, bool, list[int]]] = []  # greedy, decided by the candidates alone
    full: list[tuple[int, _Candidates | None, bool, list[int]]] = []  # need the whole logits row
    for n, sequence in enumerate(sequences):
        generated = sequence.generated
        if len(generated) >= CHARACTER_CONTEXT:
            tail = generated[-CHARACTER_CONTEXT:]
        else:
            tail = sequence.tail(CHARACTER_CONTEXT)
        pair = (tail[-2], tail[-1]) if len(tail) >= 2 else sequence.last_two()
        prev.append(pair[0] % size)
        last.append(pair[1] % size)
        positions.append((len(sequence.prompt) + len(generated)) % POSITION_PERIOD)
        params = sequence.params
        inside_character = bool(tail) and tail[-1] in fragments
        found = lm._candidates_after(tuple(tail) if inside_character else tuple(tail[-CORPUS_CONTEXT:]))
        usable = found.usable(params.max_new_tokens - len(generated)) if found is not None else None
        banned = sequence.banned_now() if params.bad_words else []
        if usable is not None and params.greedy and all(-size <= b < size for b in banned):
            if usable.only is not None and not banned:  # the text goes on one way: no logits needed
                chosen[n] = usable.only
            else:
                fast.append((n, usable, inside_character, banned))
        else:
            full.append((n, usable, inside_character, banned))
    if len(fast) >= _BATCHED_GREEDY:
        fast = _choose_greedy_batched(lm, fast, prev, last, positions, chosen)
    for n, usable, inside_character, banned in fast:
        hidden = lm._emb_last[last[n]] + lm._emb_prev[prev[n]] + lm._emb_pos[positions[n]]
        own = usable.out_rows @ hidden  # the candidates' logits, exact like the whole row's
        # The reference scores less the row's maximum and the bonus, the same for every candidate.
        scores = np.floor((own - own.min()) / 4) + usable.extra
        if banned:
            scores[np.isin(usable.tokens, [b + size if b < 0 else b for b in banned])] = -np.inf
            if not np.isfinite(scores).any():  # every candidate is banned: the whole row decides
                full.append((n, usable, inside_character, banned))
                continue
        chosen[n] = int(usable.tokens[int(np.argmax(scores))])
    if full:
        rows = [n for n, _, _, _ in full]
        logits = _hidden_of(lm, rows, prev, last, positions) @ lm._out
        maxima = logits.max(axis=1).tolist()
        for (n, usable, exclusive, banned), row, maximum in zip(full, logits, maxima):
            chosen[n] = _choose_from_row(lm, row, maximum, usable, exclusive, banned, sequences[n])
    return chosen


def _hidden_of(
    lm: ReferenceLM, rows: list[int], prev: list[int], last: list[int], positions: list[int]
) -> np.ndarray:
    """The hidden states of the sequences ``rows`` of a batch, shape [len(rows), hidden]."""
    if len(rows) == 1:
        n = rows[0]
        return (lm._emb_last[last[n]] + lm._emb_prev[prev[n]] + lm._emb_pos[positions[n]])[None]
    count = len(rows)
    return lm._hidden_rows(
        np.fromiter((prev[n] for n in rows), dtype=np.intp, count=count),
        np.fromiter((last[n] for n in rows), dtype=np.intp, count=count),
        np.fromiter((positions[n] for n in rows), dtype=np.intp, count=count),
    )


def _choose_greedy_batched(
    lm: ReferenceLM,
    fast: list[tuple[int, _Candidates, bool, list[int]]],
    prev: list[int],
    last: list[int],
    positions: list[int],
    chosen: list[int],
) -> list[tuple[int, _Candidates, bool, list[int]]]:
    """The fast path of :func:`choose_tokens` for many sequences at once: their candidates are
    scored as one flat array (segments of the model's concatenated entries). Returns the sequences
    it leaves to the per-sequence path: bad words, or candidates cut down by the budget."""
    rest = [f for f in fast if f[3] or f[1].start < 0]
    if rest:
        fast = [f for f in fast if not (f[3] or f[1].start < 0)]
        if not fast:
            return rest
    count = len(fast)
    rows = [n for n, _, _, _ in fast]
    starts = np.fromiter((f[1].start for f in fast), dtype=np.int64, count=count)
    sizes = np.fromiter((f[1].tokens.size for f in fast), dtype=np.int64, count=count)
    ends = np.cumsum(sizes)
    firsts = ends - sizes  # where each sequence's segment begins in the flat arrays
    segment = np.repeat(np.arange(count), sizes)
    flat = np.arange(int(ends[-1])) + (starts - firsts)[segment]
    hidden = _hidden_of(lm, rows, prev, last, positions)
    own = np.einsum("kh,kh->k", lm._all_out_rows[flat], hidden[segment])  # exact integer sums
    scores = np.floor((own - np.minimum.reduceat(own, firsts)[segment]) / 4) + lm._all_extra[flat]
    # Best score first, then the lowest id, as one integer per candidate (scores are small integers).
    tokens = lm._all_tokens[flat]
    keys = scores.astype(np.int64) * (1 << 32) + ((1 << 32) - 1 - tokens)
    best = (1 << 32) - 1 - (np.maximum.reduceat(keys, firsts) & ((1 << 32) - 1))
    for n, token in zip(rows, best.tolist()):
        chosen[n] = token
    return rest


def _choose_from_row(
    lm: ReferenceLM,
    row: np.ndarray,
    maximum: float,
    usable: _Candidates | None,
    exclusive: bool,
    banned: list[int],
    sequence: SequenceState,
) -> int:
    """One sequence's token from its whole logits row (modified in place) and the row's maximum."""
    if usable is not None:  # scored from the row before anything is banned
        own = row[usable.tokens]
        # Integer-valued float32, so the choice is exact on every machine. The weights' own preference
        # is damped to about a nat, so that at temperature 1 the sampler does take other branches.
        scores = maximum + lm.corpus_bonus + np.floor((own - own.min()) / 4) + usable.extra
    row += lm._never_mask
    if usable is not None:
        if exclusive:
            row[:] = -np.inf
        row[usable.tokens] = scores
    if banned:
        row[banned] = -np.inf
    elif usable is not None:  # the candidates' scores are finite
        return _choose_one(row, sequence.params, sequence.position)
    if not np.isfinite(row).any():  # everything the text allows is a bad word: leave the text
        row[:] = lm.logits(*(np.array([v]) for v in sequence.last_two()), np.array([sequence.position]))[0]
        row[lm.never_sampled] = -np.inf
        row[banned] = -np.inf
    return _choose_one(row, sequence.params, sequence.position)


def _choose_one(row: np.ndarray, params: SamplingParams, position: int) -> int:
    if params.greedy:
        return int(np.argmax(row))  # first index among ties: deterministic
    scores = row.astype(np.float64) * (LOGIT_SCALE / params.temperature)
    allowed = np.isfinite(scores)
    if not allowed.any():
        return int(np.argmax(row))
    if 0 < params.top_k < int(allowed.sum()):
        kth = np.partition(scores, scores.size - params.top_k)[scores.size - params.top_k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.flatnonzero(allowed)
    # Highest score first, ties by lower id: a total order, so the choice is reproducible.
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if params.top_k > 0:
        order = order[: params.top_k]
    weights = np.exp(scores[order] - scores[order[0]])
    cumulative = np.cumsum(weights)
    if 0.0 < params.top_p < 1.0:
        keep = int(np.searchsorted(cumulative, params.top_p * cumulative[-1], side="left")) + 1
        cumulative = cumulative[:keep]
        order = order[:keep]
    pick = int(np.searchsorted(cumulative, uniform_for(params.seed, position) * cumulative[-1], side="right"))
    return int(order[min(pick, order.size - 1)])
