"""The reference engine's core without Triton: vocabulary, model, sampling, KV blocks, blob, scheduler,
request parsing. The same files run inside tritonserver in tests/reference_engine/test_triton.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.reference_engine import ENGINE_DIR, FLAGGED_OUTPUTS, RESPONSE_ORDER, write_tokenizer

sys.path.insert(0, str(ENGINE_DIR))

from reference_blob import ContextPhaseState, decode_context_phase, encode_context_phase  # noqa: E402
from reference_contract import parse_request, read_engine_config, response_arrays  # noqa: E402
from reference_kv import KvBlockPool  # noqa: E402
from reference_lm import (  # noqa: E402
    NATURAL_LENGTH_MIN,
    ReferenceEngineError,
    ReferenceLM,
    SamplingParams,
    natural_length,
    prompt_digest,
    read_vocabulary,
)
from reference_scheduler import BatcherSettings, EngineRequest, InflightBatcher  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def lm(tokenizer_dir) -> ReferenceLM:
    return ReferenceLM(read_vocabulary(str(tokenizer_dir)), seed=7)


class RecordingSink:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.tokens: list[int] = []
        self.finals = 0
        self.cancel_after = cancel_after
        self.was_cancelled = False
        self.failure: str | None = None

    def deliver(self, sequence, tokens, final):
        self.tokens += tokens
        self.finals += int(final)
        return True

    def is_cancelled(self):
        return self.cancel_after is not None and len(self.tokens) >= self.cancel_after

    def cancelled(self, sequence):
        self.was_cancelled = True

    def failed(self, message):
        self.failure = message


def make_batcher(
    lm, blocks=256, tokens_per_block=8, reuse=True, max_active=16, **settings
) -> InflightBatcher:
    return InflightBatcher(
        lm,
        KvBlockPool(blocks, tokens_per_block, reuse),
        BatcherSettings(max_active=max_active, cancellation_check_period_s=0.0, **settings),
    )


def run_all(batcher: InflightBatcher) -> None:
    while batcher.step():
        pass


def generate(lm, prompt, **params) -> list[int]:
    batcher = make_batcher(lm)
    sink = RecordingSink()
    batcher.submit(EngineRequest("r", np.array(prompt, np.int32), SamplingParams(**params)), sink)
    run_all(batcher)
    assert sink.finals == 1
    return sink.tokens


# ------------------------------------------------------------------------------------------ vocabulary


def test_vocabulary_comes_from_tokenizer_json_and_config(tokenizer_dir):
    vocab = read_vocabulary(str(tokenizer_dir))
    tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    assert vocab.vocab_size == len(tokenizer["model"]["vocab"])
    assert vocab.eos_id == tokenizer["model"]["vocab"]["</s>"]
    assert vocab.pad_id == tokenizer["model"]["vocab"]["<pad>"]
    assert {t["id"] for t in tokenizer["added_tokens"]} <= vocab.special_ids


def test_vocabulary_reads_unigram_lists(tmp_path):
    from tokenizers import Tokenizer, models  # noqa: PLC0415

    pieces = [("<unk>", 0.0), ("</s>", 0.0)] + [(f"p{i}", -float(i)) for i in range(30)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=0))
    tokenizer.add_special_tokens(["<unk>", "</s>"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    vocab = read_vocabulary(str(tmp_path))
    assert vocab.vocab_size == 32
    assert vocab.eos_id == 1
    assert vocab.special_ids == {0, 1}


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ReferenceEngineError, match="has no tokenizer.json"):
        read_vocabulary(str(tmp_path))


# ------------------------------------------------------------------------------------------ model and sampling

PROMPT = [40, 41, 42, 43, 44]
SAMPLED = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 11}


def test_same_prompt_and_seed_give_the_same_tokens(lm):
    first = generate(lm, PROMPT, max_new_tokens=64, **SAMPLED)
    assert first == generate(lm, PROMPT, max_new_tokens=64, **SAMPLED)
    assert len(first) == 64
    assert first != generate(lm, PROMPT, max_new_tokens=64, **{**SAMPLED, "seed": 12})


def test_weights_seed_changes_the_model(tokenizer_dir, lm):
    other = ReferenceLM(read_vocabulary(str(tokenizer_dir)), seed=8)
    assert other.fingerprint != lm.fingerprint
    assert generate(other, PROMPT, max_new_tokens=32) != generate(lm, PROMPT, max_new_tokens=32)


def test_greedy_rules_follow_trtllm(lm):
    greedy = generate(lm, PROMPT, max_new_tokens=32, seed=1)
    assert greedy == generate(lm, PROMPT, max_new_tokens=32, seed=2)  # no top_k/top_p: greedy
    assert greedy == generate(lm, PROMPT, max_new_tokens=32, temperature=0.0, top_k=50, seed=3)
    assert greedy == generate(lm, PROMPT, max_new_tokens=32, temperature=1.5, top_k=1, seed=4)
    assert greedy == generate(lm, PROMPT, max_new_tokens=32, top_p=1e-9, seed=5)  # nucleus of one token


def test_tokens_do_not_depend_on_what_else_is_batched(lm):
    alone = generate(lm, PROMPT, max_new_tokens=48, **SAMPLED)
    batcher = make_batcher(lm)
    sinks = [RecordingSink() for _ in range(6)]
    for i, sink in enumerate(sinks):
        prompt = PROMPT if i == 3 else [50 + i, 60 + i, 70]
        batcher.submit(
            EngineRequest("r", np.array(prompt, np.int32), SamplingParams(max_new_tokens=48 + i, **SAMPLED)),
            sink,
        )
    run_all(batcher)
    assert sinks[3].tokens[:48] == alone


def test_special_tokens_are_never_generated(lm):
    tokens = generate(lm, PROMPT, max_new_tokens=400, temperature=5.0, seed=3, top_p=0.99)
    assert not set(tokens) & set(lm.vocab.special_ids)


def test_end_id_ends_at_the_natural_length_and_min_tokens_postpones_it(lm):
    nat = natural_length(lm.seed, np.array(PROMPT, np.int32))
    assert NATURAL_LENGTH_MIN <= nat
    eos = lm.vocab.eos_id
    assert len(generate(lm, PROMPT, max_new_tokens=nat + 50, end_id=eos)) == nat
    assert len(generate(lm, PROMPT, max_new_tokens=nat + 50, end_id=None)) == nat + 50
    assert len(generate(lm, PROMPT, max_new_tokens=nat + 50, end_id=eos, min_tokens=nat + 20)) == nat + 20
    # Budgets below the natural minimum are always honoured exactly.
    assert len(generate(lm, PROMPT, max_new_tokens=NATURAL_LENGTH_MIN, end_id=eos)) == NATURAL_LENGTH_MIN


def test_stop_words_end_the_sequence_and_are_kept(lm):
    free = generate(lm, PROMPT, max_new_tokens=40)
    word = tuple(free[10:12])
    stopped = generate(lm, PROMPT, max_new_tokens=40, stop_words=(word,))
    first = next(i for i in range(len(free) - 1) if tuple(free[i : i + 2]) == word)
    assert stopped == free[: first + 2]


def test_bad_words_are_never_generated(lm):
    free = generate(lm, PROMPT, max_new_tokens=40)
    single = (free[5],)
    pair = (free[20], free[21])
    banned = generate(lm, PROMPT, max_new_tokens=40, bad_words=(single, pair))
    assert free[5] not in banned
    assert all(tuple(banned[i : i + 2]) != pair for i in range(len(banned) - 1))
    assert banned[:5] == free[:5]


def test_generation_only_resumes_exactly_where_context_only_stopped(lm):
    params = SamplingParams(max_new_tokens=50, **SAMPLED)
    prompt = np.array(PROMPT * 4, np.int32)
    aggregated = RecordingSink()
    context = RecordingSink()
    batcher = make_batcher(lm)
    batcher.submit(EngineRequest("a", prompt, params), aggregated)
    batcher.submit(EngineRequest("c", prompt, params, request_type="context_only"), context)
    run_all(batcher)
    assert context.tokens == aggregated.tokens[:1] and context.finals == 1
    state = ContextPhaseState(
        lm.fingerprint, prompt_digest(prompt).hex(), len(prompt), context.tokens[0], 3, 8, "c"
    )
    resumed = RecordingSink()
    decode_side = make_batcher(lm)  # another engine instance: nothing shared but the blob
    decode_side.submit(
        EngineRequest(
            "g", prompt, params, "generation_only", decode_context_phase(encode_context_phase(state))
        ),
        resumed,
    )
    run_all(decode_side)
    assert resumed.tokens == aggregated.tokens


# ------------------------------------------------------------------------------------------ blob


def _blob(lm) -> bytes:
    return encode_context_phase(ContextPhaseState(lm.fingerprint, "ab" * 32, 5, 42, 1, 8, "req-1"))


def test_blob_is_self_describing_and_round_trips(lm):
    blob = _blob(lm)
    assert b"tritonstack reference engine" in blob
    assert decode_context_phase(blob).first_token == 42


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
        (lambda b: b[:8] + b"\x09\x00" + b[10:], "format version 9"),
        (lambda b: b[:-40] + bytes([b[-40] ^ 1]) + b[-39:], "checksum mismatch"),
        (lambda b: b + b"\x00", "length mismatch"),
    ],
)
def test_damaged_blobs_are_refused_with_a_reason(lm, damage, message):
    with pytest.raises(ReferenceEngineError, match=message):
        decode_context_phase(damage(_blob(lm)))


# ------------------------------------------------------------------------------------------ KV blocks


def test_shared_prefix_reuses_blocks_and_lru_evicts():
    pool = KvBlockPool(num_blocks=6, tokens_per_block=4, reuse=True)
    prompt = list(range(100, 113))  # 13 tokens: 3 full blocks, reusable up to prompt[:-1] -> 3
    first = pool.admit(prompt, 3)
    assert first.reused_blocks == 0 and first.total_blocks == 4 and first.reserved == 0
    pool.release(first, prompt + [1, 2, 3])
    assert pool.stats().used_blocks == 0
    second = pool.admit(prompt, 3)
    assert second.reused_blocks == 3 and pool.stats().reused_blocks_total == 3
    pool.release(second, prompt + [1, 2, 3])
    # An unrelated prompt needing all 6 blocks evicts the cached ones.
    other = pool.admit(list(range(24)), 0)
    assert other.total_blocks == 6
    pool.release(other, list(range(24)))
    third = pool.admit(prompt, 3)
    assert third.reused_blocks == 0


def test_pool_without_reuse_never_reuses():
    pool = KvBlockPool(num_blocks=8, tokens_per_block=4, reuse=False)
    prompt = list(range(12))
    pool.release(pool.admit(prompt, 1), prompt + [5])
    assert pool.admit(prompt, 1).reused_blocks == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 30), st.integers(0, 12), st.integers(0, 3)), min_size=1, max_size=25)
)
def test_pool_accounting_stays_consistent(requests):
    pool = KvBlockPool(num_blocks=12, tokens_per_block=4, reuse=True)
    held = []
    for length, budget, family in requests:
        prompt = [family] * length
        allocation = pool.admit(prompt, budget)
        if allocation is None:
            assert held, "an empty pool must admit every request that fits the cache"
            victim_prompt, victim_budget, victim = held.pop(0)
            pool.grow(victim, len(victim_prompt) + victim_budget)
            pool.release(victim, victim_prompt + [0] * victim_budget)
            continue
        held.append((prompt, budget, allocation))
        stats = pool.stats()
        assert stats.used_blocks + stats.free_blocks == 12
        assert sum(a.reserved for _, _, a in held) <= stats.free_blocks
    for prompt, budget, allocation in held:
        pool.grow(allocation, len(prompt) + budget)
        pool.release(allocation, prompt + [0] * budget)
    assert pool.stats().used_blocks == 0


# ------------------------------------------------------------------------------------------ scheduler


def test_cancellation_stops_work_and_frees_blocks(lm):
    batcher = make_batcher(lm)
    sink = RecordingSink(cancel_after=5)
    batcher.submit(EngineRequest("r", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=500)), sink)
    run_all(batcher)
    assert sink.was_cancelled and 5 <= len(sink.tokens) < 500
    assert batcher.pool.stats().used_blocks == 0
    assert batcher.drain_outcomes().cancelled == 1


def test_requests_wait_for_blocks_and_batch_slots_then_all_finish(lm):
    batcher = make_batcher(lm, blocks=6, tokens_per_block=8, max_active=2)
    sinks = [RecordingSink() for _ in range(5)]
    for i, sink in enumerate(sinks):
        batcher.submit(
            EngineRequest(str(i), np.array([30 + i] * 9, np.int32), SamplingParams(max_new_tokens=15)), sink
        )
    batcher.step()
    assert batcher.last_stats.active == 2 and batcher.last_stats.waiting == 3
    run_all(batcher)
    assert [len(s.tokens) for s in sinks] == [15] * 5
    outcomes = batcher.drain_outcomes()
    assert outcomes.completed == 5 and outcomes.output_lengths == [15] * 5
    assert batcher.pool.stats().used_blocks == 0


def test_a_request_larger_than_the_cache_is_refused_up_front(lm):
    batcher = make_batcher(lm, blocks=4, tokens_per_block=8)
    with pytest.raises(ReferenceEngineError, match="needs 5 KV blocks"):
        batcher.submit(
            EngineRequest("r", np.array([5] * 30, np.int32), SamplingParams(max_new_tokens=10)),
            RecordingSink(),
        )


def test_configured_speeds_set_the_simulated_iteration_time(lm):
    slept: list[float] = []
    batcher = InflightBatcher(
        lm,
        KvBlockPool(64, 8, True),
        BatcherSettings(max_active=4, prefill_tokens_per_s=1000.0, decode_tokens_per_s=50.0),
        clock=lambda: 0.0,  # a frozen clock: compute takes no time
        sleep=slept.append,
    )
    batcher.submit(
        EngineRequest("r", np.array([9] * 100, np.int32), SamplingParams(max_new_tokens=3)), RecordingSink()
    )
    run_all(batcher)
    assert slept == pytest.approx([0.1, 0.02, 0.02])  # 100 prompt tokens at 1000/s, then 1/50 s per step


# ------------------------------------------------------------------------------------------ contract


def _model_config(**parameters: str) -> dict:
    return {
        "name": "m_tensorrt_llm",
        "max_batch_size": 8,
        "model_transaction_policy": {"decoupled": True},
        "parameters": {k: {"string_value": v} for k, v in parameters.items()},
    }


def test_engine_config_treats_placeholders_as_unset_and_resolves_paths(tokenizer_dir):
    config = read_engine_config(
        _model_config(
            tokenizer_dir="../tok",
            max_input_len="${max_input_len}",
            enable_kv_cache_reuse="",
            max_tokens_in_paged_kv_cache="64",
            reference_tokens_per_block="16",
        ),
        model_dir="/models/m_tensorrt_llm",
    )
    assert config.tokenizer_dir == "/models/tok"
    assert config.max_input_len is None and config.enable_kv_cache_reuse is True
    assert config.kv_blocks == 4 and config.decoupled and config.max_active == 8


def test_engine_config_errors_name_the_parameter():
    with pytest.raises(ReferenceEngineError, match="enable_kv_cache_reuse='maybe' is not a boolean"):
        read_engine_config(_model_config(tokenizer_dir="/t", enable_kv_cache_reuse="maybe"), "/m")
    with pytest.raises(ReferenceEngineError, match="tokenizer_dir is unset"):
        read_engine_config(_model_config(tokenizer_dir="${tokenizer_dir}"), "/m")


def _inputs(prompt, max_tokens, **extra):
    arrays = {
        "input_ids": np.array([prompt], np.int32),
        "input_lengths": np.array([len(prompt)], np.int32),
        "request_output_len": np.array([max_tokens], np.int32),
    }
    arrays.update({k: np.asarray([v]) for k, v in extra.items()})
    return arrays


@pytest.fixture()
def config(tokenizer_dir):
    return read_engine_config(
        _model_config(tokenizer_dir=str(tokenizer_dir), max_input_len="16", max_output_len="100"), "/m"
    )


def test_both_tensor_name_generations_are_read(config, lm):
    new = parse_request(_inputs(PROMPT, 5, seed=np.uint64(9), min_tokens=3), {}, config, lm)
    old = parse_request(_inputs(PROMPT, 5, random_seed=np.uint64(9), min_length=3), {}, config, lm)
    assert new.engine_request.params == old.engine_request.params
    assert new.engine_request.params.seed == 9 and new.engine_request.params.min_tokens == 3


def test_stop_words_layout_is_ids_then_cumulative_offsets(config, lm):
    words = np.array([[[7, 8, 9, 4], [2, 3, 4, -1]]], np.int32)
    parsed = parse_request({**_inputs(PROMPT, 5), "stop_words_list": words}, {}, config, lm)
    assert parsed.engine_request.params.stop_words == ((7, 8), (9,), (4,))


@pytest.mark.parametrize(
    ("inputs", "parameters", "message"),
    [
        (_inputs(list(range(20)), 5), {}, "more than max_input_len"),
        (_inputs(PROMPT, 0), {}, "ask for at least 1 token"),
        (_inputs([-3], 5), {}, "negative token ids"),
        (
            {"input_ids": np.zeros((2, 3), np.int32), "request_output_len": np.array([[1], [1]])},
            {},
            "batch size 2",
        ),
        (_inputs(PROMPT, 5), {"request_type": "prefill"}, "request_type='prefill'"),
        (_inputs(PROMPT, 5), {"request_type": "generation_only"}, "needs the context_phase_params"),
        (_inputs(PROMPT, 5, temperature=np.float32(-1)), {}, "temperature=-1.0"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(config, lm, inputs, parameters, message):
    with pytest.raises(ReferenceEngineError, match=message):
        parse_request(inputs, parameters, config, lm)


def test_generation_only_checks_the_prompt_against_the_blob(config, lm):
    blob = np.frombuffer(
        encode_context_phase(
            ContextPhaseState(
                lm.fingerprint, prompt_digest(np.array(PROMPT, np.int32)).hex(), 5, 9, 1, 8, "c"
            )
        ),
        np.uint8,
    )
    ok = parse_request(
        {**_inputs(PROMPT, 5), "context_phase_params": blob[np.newaxis]},
        {"request_type": "generation_only"},
        config,
        lm,
    )
    assert ok.engine_request.resume.first_token == 9
    with pytest.raises(ReferenceEngineError, match="belong to another prompt"):
        parse_request(
            {**_inputs(PROMPT[:4], 5), "context_phase_params": blob[np.newaxis]},
            {"request_type": "generation_only"},
            config,
            lm,
        )


def test_max_output_len_clamps_the_budget(config, lm):
    assert parse_request(_inputs(PROMPT, 5000), {}, config, lm).engine_request.params.max_new_tokens == 100


def test_responses_carry_only_requested_outputs(config, lm):
    parsed = parse_request(
        _inputs(PROMPT, 3, exclude_input_in_output=False, return_num_output_tokens=True), {}, config, lm
    )
    batcher = make_batcher(lm)
    sequence = batcher.submit(parsed.engine_request, RecordingSink())
    run_all(batcher)
    requested = frozenset({"output_ids", "sequence_length", "num_output_tokens", "num_input_tokens"})
    arrays = response_arrays(sequence, parsed, [], requested, None, True, tuple(RESPONSE_ORDER), FLAGGED_OUTPUTS)
    # num_input_tokens was not asked for by the flag
    assert list(arrays) == ["output_ids", "sequence_length", "num_output_tokens"]
    assert arrays["output_ids"].shape == (1, 1, len(PROMPT) + 3)
    assert arrays["output_ids"][0, 0, : len(PROMPT)].tolist() == PROMPT
    assert arrays["num_output_tokens"].tolist() == [[3]]


class BrokenSink(RecordingSink):
    def deliver(self, sequence, tokens, final):
        raise ValueError("cannot build this response")


def test_a_failing_response_fails_its_request_only(lm):
    errors: list[str] = []
    batcher = InflightBatcher(
        lm, KvBlockPool(64, 8, True), BatcherSettings(max_active=4), log_error=errors.append
    )
    broken, healthy = BrokenSink(), RecordingSink()
    batcher.submit(EngineRequest("b", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=5)), broken)
    batcher.submit(EngineRequest("h", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=5)), healthy)
    run_all(batcher)
    assert "cannot build this response" in broken.failure and len(healthy.tokens) == 5
    assert errors and batcher.pool.stats().used_blocks == 0
    outcomes = batcher.drain_outcomes()
    assert (outcomes.failed, outcomes.completed) == (1, 1)


def test_stopping_the_scheduler_answers_every_open_request(lm):
    import threading  # noqa: PLC0415

    batcher = make_batcher(lm)
    sinks = [RecordingSink() for _ in range(3)]
    for sink in sinks:
        batcher.submit(
            EngineRequest("r", np.array(PROMPT, np.int32), SamplingParams(max_new_tokens=500)), sink
        )
    stop = threading.Event()
    reports = []

    def stop_after_first_report(stats):
        reports.append(stats)
        stop.set()

    batcher.run(stop, stop_after_first_report)
    assert all(s.failure == "the model is being unloaded" for s in sinks)
    assert batcher.pool.stats().used_blocks == 0 and reports


def test_prompt_ids_past_the_vocabulary_are_served_like_the_engine_path(config, lm):
    """NVIDIA's benchmark_core_model.py sends random prompt ids up to INT32_MAX; the C++ engine path
    does not validate prompt ids against the vocabulary, so neither does the reference engine."""
    big = [2**31 - 1, 123_456_789, 5]
    parsed = parse_request(_inputs(big, 3), {}, config, lm)
    assert parsed.engine_request.prompt.tolist() == big
