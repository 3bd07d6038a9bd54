"""The ``tensorrt_llm`` model's contract as the tritonstack reference engine reads and writes it.

Parameters come from config.pbtxt (same keys as the TensorRT-LLM backend, plus ``reference_*``);
inputs and outputs have the names, types and shapes of the TRT-LLM backend's ``tensorrt_llm`` model
for both name generations (0.19: ``random_seed``, ``min_length``; 1.x: ``seed``, ``min_tokens``,
``return_num_*_tokens``). No Triton import here: model.py turns Triton tensors into numpy arrays and
back, everything in between is plain functions that unit tests call directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from reference_backend import BOOL_FALSE, BOOL_TRUE
from reference_blob import ContextPhaseState, decode_context_phase, encode_context_phase
from reference_lm import ReferenceEngineError, ReferenceLM, SamplingParams, VocabularyFacts, prompt_digest
from reference_scheduler import REQUEST_TYPES, EngineRequest, Sequence

__all__ = [
    "EngineConfig",
    "EnqueueError",
    "INPUT_NAMES",
    "ParsedRequest",
    "check_requested_outputs",
    "context_phase_blob",
    "parse_batch",
    "parse_request",
    "split_batch",
    "read_engine_config",
    "response_arrays",
]

# Inputs the engine reads; every other declared input may be present and is ignored.
INPUT_NAMES = (
    "input_ids",
    "input_lengths",
    "request_output_len",
    "end_id",
    "pad_id",
    "streaming",
    "temperature",
    "runtime_top_k",
    "runtime_top_p",
    "random_seed",
    "seed",
    "min_length",
    "min_tokens",
    "stop_words_list",
    "bad_words_list",
    "exclude_input_in_output",
    "return_num_input_tokens",
    "return_num_output_tokens",
    "return_log_probs",
    "return_perf_metrics",
    "context_phase_params",
)


@dataclass(frozen=True)
class EngineConfig:
    model_name: str
    tokenizer_dir: str
    decoupled: bool
    max_batch_size: int
    exclude_input_in_output: bool
    kv_blocks: int
    tokens_per_block: int
    enable_kv_cache_reuse: bool
    seed: int
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    max_input_len: int | None
    max_output_len: int | None
    cancellation_check_period_s: float
    stats_period_s: float

    @property
    def max_active(self) -> int:
        # The engine's batch is bounded by max_batch_size, like a TensorRT-LLM engine built with it.
        return self.max_batch_size if self.max_batch_size > 0 else UNBATCHED_MAX_ACTIVE


UNBATCHED_MAX_ACTIVE = 16


def _unset(value: str) -> bool:
    # Same rule as the TRT-LLM python backend: "" and an unfilled "${...}" mean "not set".
    return value == "" or (value.startswith("${") and value.endswith("}"))


def read_engine_config(model_config: Mapping, model_dir: str) -> EngineConfig:
    """Read config.pbtxt (as Triton's JSON) into an EngineConfig; bad values name their key."""
    raw = {k: (v or {}).get("string_value", "") for k, v in (model_config.get("parameters") or {}).items()}
    name = str(model_config.get("name", "tensorrt_llm"))

    def text(key: str) -> str | None:
        value = raw.get(key, "").strip()
        return None if _unset(value) else value

    def boolean(key: str, default: bool) -> bool:
        value = text(key)
        if value is None:
            return default
        # The spellings of the backend's GetParameter<bool> (see reference_backend.BOOL_TRUE).
        if value in BOOL_TRUE:
            return True
        if value in BOOL_FALSE:
            return False
        raise ReferenceEngineError(
            f"{name}: parameter {key}={value!r} is not a boolean ({'/'.join(BOOL_TRUE + BOOL_FALSE)})"
        )

    def number(key: str, kind: type, default: float | int | None, minimum: float = 0) -> float | int | None:
        value = text(key)
        if value is None:
            return default
        try:
            parsed = kind(value)
        except ValueError:
            raise ReferenceEngineError(
                f"{name}: parameter {key}={value!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
        if parsed < minimum:
            raise ReferenceEngineError(f"{name}: parameter {key}={value!r} must be at least {minimum}")
        return parsed

    tokenizer_dir = text("tokenizer_dir")
    if tokenizer_dir is None:
        raise ReferenceEngineError(
            f"{name}: parameter tokenizer_dir is unset; the reference engine needs the tokenizer to learn "
            "the vocabulary size and special tokens"
        )
    if not os.path.isabs(tokenizer_dir):
        tokenizer_dir = os.path.normpath(os.path.join(model_dir, tokenizer_dir))
    tokens_per_block = number("reference_tokens_per_block", int, 32, 1)
    kv_blocks = number("reference_kv_blocks", int, 4096, 1)
    max_kv_tokens = number("max_tokens_in_paged_kv_cache", int, None, 1)
    if max_kv_tokens is not None:
        kv_blocks = min(kv_blocks, max(1, max_kv_tokens // tokens_per_block))
    policy = model_config.get("model_transaction_policy") or {}
    return EngineConfig(
        model_name=name,
        tokenizer_dir=tokenizer_dir,
        decoupled=bool(policy.get("decoupled", False)),
        max_batch_size=int(model_config.get("max_batch_size", 0)),
        exclude_input_in_output=boolean("exclude_input_in_output", False),
        kv_blocks=kv_blocks,
        tokens_per_block=tokens_per_block,
        # Default true as in TensorRT-LLM >= 0.19 (it was false before).
        enable_kv_cache_reuse=boolean("enable_kv_cache_reuse", True),
        seed=number("reference_seed", int, 0),
        prefill_tokens_per_s=number("reference_prefill_tokens_per_s", float, None, 1e-9),
        decode_tokens_per_s=number("reference_decode_tokens_per_s", float, None, 1e-9),
        max_input_len=number("max_input_len", int, None, 1),
        max_output_len=number("max_output_len", int, None, 1),
        cancellation_check_period_s=number("cancellation_check_period_ms", int, 100) / 1000.0,
        stats_period_s=max(number("stats_check_period_ms", int, 100, 1), 1) / 1000.0,
    )


@dataclass(frozen=True)
class ParsedRequest:
    engine_request: EngineRequest
    streaming: bool
    exclude_input_in_output: bool
    return_num_input_tokens: bool
    return_num_output_tokens: bool
    return_log_probs: bool = False
    return_perf_metrics: bool = False
    # Which row of the Triton request this is, and how many rows it has (batch_index is sent only
    # when batch_size > 1).
    batch_index: int = 0
    batch_size: int = 1


class EnqueueError(ReferenceEngineError):
    """What the backend throws while it turns a Triton request into executor requests; its enqueue()
    answers those with TRITONSERVER_ERROR_INTERNAL (sendEnqueueResponse), not INVALID_ARG.
    https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L1003-L1006
    """


# Read from the Triton request as a whole, not per row: readInputsTensors skips these tensors and
# the backend reads "streaming" with getRequestBooleanInputTensor (its first element).
# https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/utils.cc#L240-L245
REQUEST_LEVEL_INPUTS = ("streaming",)


def split_batch(
    inputs: Mapping[str, np.ndarray | None], config: EngineConfig
) -> list[dict[str, np.ndarray | None]]:
    """Split a Triton request's tensors into one set per batch row, as the backend does before it
    builds one executor request per row (utils.cc splitBatchInputsTensors):
    https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/utils.cc#L158-L217
    (1.x: the same function in NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/utils.cc).

    The batch size is input_ids' first dimension. With more than one row input_lengths is required,
    every tensor is sliced along the batch dimension (each row keeps a batch dim of 1) and each
    row's input_ids is cut to its input_lengths (parse_request does the cut). A request of batch 1
    is passed on unchanged.
    """
    if config.max_batch_size <= 0:
        return [dict(inputs)]  # no batch dimension: always one sequence
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        return [dict(inputs)]  # parse_request names what is missing
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise EnqueueError("Expected inputTokens tensors to have 2 dimensions")
    size = input_ids.shape[0]
    if size <= 1:
        return [dict(inputs)]
    lengths = inputs.get("input_lengths")
    if lengths is None:
        raise EnqueueError("input lengths tensor not provided")
    lengths = np.asarray(lengths)
    # The backend sees input_lengths as [batch] (config.pbtxt reshapes its dims [1] to []); a
    # caller that passes [batch, 1] is read the same way.
    if lengths.ndim not in (1, 2) or (lengths.ndim == 2 and lengths.shape[1] != 1):
        raise EnqueueError("Expected inputLengths tensors to have 1 dimension")
    rows: list[dict[str, np.ndarray | None]] = [{} for _ in range(size)]
    for name, value in inputs.items():
        if value is None:
            for row in rows:
                row[name] = None
            continue
        value = np.asarray(value)
        if name in REQUEST_LEVEL_INPUTS:
            first = value.reshape(-1)[:1]
            for row in rows:
                row[name] = first
            continue
        if value.ndim == 0 or value.shape[0] != size:
            # Triton refuses this before the model sees it ("batch size does not match other inputs").
            raise EnqueueError(
                f"input {name} has batch size {value.shape[0] if value.ndim else 0} but input_ids has {size} rows"
            )
        for index, row in enumerate(rows):
            row[name] = value[index : index + 1]
    return rows


def parse_batch(
    inputs: Mapping[str, np.ndarray | None],
    parameters: Mapping[str, object],
    config: EngineConfig,
    lm: ReferenceLM,
    request_id: str = "",
) -> list[ParsedRequest]:
    """One ParsedRequest per batch row of a Triton request, with the backend's checks in its order:
    split the rows (split_batch), then createRequestsFromInputTensors' two mode checks, then each row.
    https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/utils.cc#L895-L908
    (1.x: createRequestsFromInputTensors in NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/utils.cc).
    All rows share the Triton request id (a stop request stops every row) and the request parameters.
    """
    rows = split_batch(inputs, config)
    if len(rows) > 1 and not config.decoupled:
        raise EnqueueError(
            "Batch size > 1 requires the tensorrt_llm backend to be using decoupled transaction policy"
        )
    streaming = np.asarray(inputs.get("streaming") if inputs.get("streaming") is not None else False)
    if not config.decoupled and streaming.size and bool(streaming.reshape(-1)[0]):
        raise EnqueueError("Streaming is only supported if model is deployed using decoupled mode.")
    parsed = [parse_request(row, parameters, config, lm, request_id=request_id) for row in rows]
    if len(parsed) == 1:
        return parsed
    return [dataclasses.replace(p, batch_index=i, batch_size=len(parsed)) for i, p in enumerate(parsed)]


def parse_request(
    inputs: Mapping[str, np.ndarray | None],
    parameters: Mapping[str, object],
    config: EngineConfig,
    lm: ReferenceLM,
    request_id: str = "",
) -> ParsedRequest:
    """Validate one row's tensors (with a batch dim of 1) and the request parameters; a Triton
    request of several rows goes through parse_batch, which splits it first."""
    batched = config.max_batch_size > 0

    def get(name: str) -> np.ndarray | None:
        value = inputs.get(name)
        if value is None:
            return None
        value = np.asarray(value)
        if not batched:
            value = value[np.newaxis, ...]
        if value.shape[0] != 1:
            raise ReferenceEngineError(
                f"input {name} has batch size {value.shape[0]}; parse_request reads one row (parse_batch "
                "splits a batched request into rows)"
            )
        return value[0]

    def scalar(names: tuple[str, ...], default, kind):
        for name in names:
            value = get(name)
            if value is not None and value.size > 0:
                return kind(value.reshape(-1)[0])
        return default

    input_ids = get("input_ids")
    if input_ids is None:
        raise ReferenceEngineError("input_ids is missing (INT32 token ids of the prompt)")
    input_ids = input_ids.reshape(-1).astype(np.int32)
    length = scalar(("input_lengths",), input_ids.size, int)
    if not 0 < length <= input_ids.size:
        raise ReferenceEngineError(f"input_lengths is {length} but input_ids holds {input_ids.size} tokens")
    prompt = np.ascontiguousarray(input_ids[:length])
    if config.max_input_len is not None and length > config.max_input_len:
        raise ReferenceEngineError(
            f"the prompt has {length} tokens, more than max_input_len ({config.max_input_len}) of {config.model_name}"
        )
    vocab: VocabularyFacts = lm.vocab
    # Negative ids are refused; ids past the vocabulary are served (see ReferenceLM.logits for why).
    if int(prompt.min()) < 0:
        raise ReferenceEngineError("input_ids holds negative token ids")

    output_len = scalar(("request_output_len",), None, int)
    if output_len is None:
        raise ReferenceEngineError("request_output_len is missing (the maximum number of tokens to generate)")
    if output_len < 1:
        raise ReferenceEngineError(f"request_output_len is {output_len}; ask for at least 1 token")
    if config.max_output_len is not None:
        output_len = min(output_len, config.max_output_len)  # clamped, as TensorRT-LLM does

    temperature = scalar(("temperature",), 1.0, float)
    top_k = scalar(("runtime_top_k",), 0, int)
    top_p = scalar(("runtime_top_p",), 0.0, float)
    if temperature < 0 or top_k < 0 or not 0.0 <= top_p <= 1.0:
        raise ReferenceEngineError(
            f"sampling settings out of range: temperature={temperature} (>= 0), runtime_top_k={top_k} (>= 0), "
            f"runtime_top_p={top_p} (0..1)"
        )
    end_id = scalar(("end_id",), vocab.eos_id, int)
    params = SamplingParams(
        max_new_tokens=output_len,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=scalar(("seed", "random_seed"), 0, int),
        min_tokens=max(0, scalar(("min_tokens", "min_length"), 0, int)),
        end_id=None if end_id is None or end_id < 0 else end_id,
        stop_words=_word_list(get("stop_words_list"), "stop_words_list"),
        bad_words=_word_list(get("bad_words_list"), "bad_words_list"),
    )

    request_type = str(parameters.get("request_type", "context_and_generation") or "context_and_generation")
    if request_type not in REQUEST_TYPES:
        raise ReferenceEngineError(
            f"request parameter request_type={request_type!r}; use one of {', '.join(REQUEST_TYPES)}"
        )
    resume = None
    blob = get("context_phase_params")
    if request_type == "generation_only":
        if blob is None or blob.size == 0:
            raise ReferenceEngineError(
                "a generation_only request needs the context_phase_params input: pass on the bytes the "
                "context_only request returned"
            )
        resume = decode_context_phase(np.asarray(blob, dtype=np.uint8).tobytes())
        _check_resume(resume, prompt, lm)

    return ParsedRequest(
        engine_request=EngineRequest(
            request_id=request_id, prompt=prompt, params=params, request_type=request_type, resume=resume
        ),
        streaming=scalar(("streaming",), False, bool),
        exclude_input_in_output=scalar(("exclude_input_in_output",), config.exclude_input_in_output, bool),
        return_num_input_tokens=scalar(("return_num_input_tokens",), False, bool),
        return_num_output_tokens=scalar(("return_num_output_tokens",), False, bool),
        return_log_probs=scalar(("return_log_probs",), False, bool),
        return_perf_metrics=scalar(("return_perf_metrics",), False, bool),
    )


def _word_list(value: np.ndarray | None, name: str) -> tuple[tuple[int, ...], ...]:
    """[2, L]: flat token ids, then cumulative end offsets padded with -1 (TRT-LLM's layout)."""
    if value is None or value.size == 0:
        return ()
    if value.ndim != 2 or value.shape[0] != 2:
        raise ReferenceEngineError(
            f"{name} must have shape [batch, 2, L] (ids, then end offsets); got {list(value.shape)} per row"
        )
    ids, offsets = value[0].tolist(), value[1].tolist()
    words = []
    start = 0
    for end in offsets:
        if end < 0:
            break
        if not start <= end <= len(ids):
            raise ReferenceEngineError(f"{name}: offset {end} is outside the {len(ids)} ids")
        if end > start:
            words.append(tuple(int(t) for t in ids[start:end]))
        start = end
    return tuple(words)


def _check_resume(resume: ContextPhaseState, prompt: np.ndarray, lm: ReferenceLM) -> None:
    if resume.model_fingerprint != lm.fingerprint:
        raise ReferenceEngineError(
            "context_phase_params come from a reference engine with other weights (seed or tokenizer differ); "
            "the prefill and decode models of one pair must use the same reference_seed and tokenizer"
        )
    if resume.prompt_len != len(prompt) or resume.prompt_sha256 != prompt_digest(prompt).hex():
        raise ReferenceEngineError(
            f"context_phase_params belong to another prompt ({resume.prompt_len} tokens) than this "
            f"generation_only request's input_ids ({len(prompt)} tokens); send the same prompt to both phases"
        )
    if not 0 <= resume.first_token < lm.vocab.vocab_size:
        raise ReferenceEngineError("context_phase_params carry a first token outside the vocabulary")


def context_phase_blob(sequence: Sequence, lm: ReferenceLM, tokens_per_block: int) -> bytes:
    request = sequence.request
    return encode_context_phase(
        ContextPhaseState(
            model_fingerprint=lm.fingerprint,
            prompt_sha256=prompt_digest(request.prompt).hex(),
            prompt_len=len(request.prompt),
            first_token=sequence.state.generated[0],
            kv_blocks=sequence.allocation.total_blocks if sequence.allocation else 0,
            tokens_per_block=tokens_per_block,
            context_request_id=request.request_id,
        )
    )


# Outputs the backend fails a response without: fillTritonResponse throws "<name> tensor must be
# present in list of output tensors", reported as "Error encountered while populating response: …".
# https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L1079-L1103
# https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L1317-L1322
# (ModelInstanceState::fillTritonResponse in NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/ for 1.x)
ALWAYS_REQUIRED_OUTPUTS = ("output_ids", "sequence_length")

def check_requested_outputs(requested: frozenset[str]) -> None:
    """Refuse a request that does not ask for output_ids and sequence_length, as the backend does."""
    if not requested:
        return  # nothing named: Triton asks for every declared output
    for name in ALWAYS_REQUIRED_OUTPUTS:
        if name not in requested:
            raise ReferenceEngineError(
                f"Error encountered while populating response: {name} tensor must be present in list of output tensors"
            )


def response_arrays(
    sequence: Sequence,
    parsed: ParsedRequest,
    new_tokens: list[int],
    requested: frozenset[str],
    blob: bytes | None,
    batched: bool,
    order: tuple[str, ...],
    flagged: Mapping[str, tuple[str, ...]],
) -> dict[str, np.ndarray]:
    """Output tensors of one response, with the real backend's presence rules, in ``order``.

    ``order`` is the backend's (backend_contract.json's response_order); an output it does not list
    comes after the listed ones. ``flagged`` (backend_contract.json's flagged_outputs, from the
    catalog) says which outputs only a set input flag brings. Presence follows ModelInstanceState::fillTritonResponse: output_ids
    and sequence_length always; batch_index (the row, shape [1, 1]) only for a Triton request of
    batch > 1; sequence_index only for num_return_sequences > 1 (the reference engine does not take
    it, so never); log probs only with
    return_log_probs; context_phase_params for context_only requests; num_input_tokens /
    num_output_tokens only when their return_* flag is set; perf metrics only with return_perf_metrics.
    Of those, only what the request asked for (an empty ``requested``: everything).

    Streaming responses carry only the new token(s); a single final response carries the whole
    sequence (with the prompt in front unless exclude_input_in_output).
    """
    state = sequence.state
    if parsed.streaming and parsed.engine_request.request_type != "context_only":
        ids = list(new_tokens)
    else:
        ids = ([] if parsed.exclude_input_in_output else state.prompt.tolist()) + state.generated
    allocation = sequence.allocation
    reused = allocation.reused_blocks if allocation else 0
    new = allocation.new_blocks if allocation else 0

    def i32(value: int) -> np.ndarray:
        return np.array([value], dtype=np.int32)

    def i64(value: int) -> np.ndarray:
        return np.array([value], dtype=np.int64)

    producers = {
        "output_ids": lambda: np.array([ids], dtype=np.int32),
        "sequence_length": lambda: i32(len(ids)),
        "output_log_probs": lambda: np.zeros((1, len(ids)), dtype=np.float32),
        "cum_log_probs": lambda: np.zeros(1, dtype=np.float32),
        "num_input_tokens": lambda: i32(len(state.prompt)),
        "num_output_tokens": lambda: i32(len(state.generated)),  # cumulative, also when streaming
        "kv_cache_alloc_new_blocks": lambda: i32(new),
        "kv_cache_reused_blocks": lambda: i32(reused),
        "kv_cache_alloc_total_blocks": lambda: i32(new + reused),
        "arrival_time_ns": lambda: i64(sequence.arrival_ns),
        "first_scheduled_time_ns": lambda: i64(sequence.first_scheduled_ns),
        "first_token_time_ns": lambda: i64(sequence.first_token_ns),
        "last_token_time_ns": lambda: i64(sequence.last_token_ns),
        "acceptance_rate": lambda: np.zeros(1, dtype=np.float32),
        "total_accepted_draft_tokens": lambda: i32(0),
        "total_draft_tokens": lambda: i32(0),
    }
    if parsed.batch_size > 1:
        # https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L1211-L1219
        producers["batch_index"] = lambda: i32(parsed.batch_index)
    if blob is not None:
        producers["context_phase_params"] = lambda: np.frombuffer(blob, dtype=np.uint8).copy()
    flags_set = {
        "return_log_probs": parsed.return_log_probs,
        "return_num_input_tokens": parsed.return_num_input_tokens,
        "return_num_output_tokens": parsed.return_num_output_tokens,
        "return_perf_metrics": parsed.return_perf_metrics,
    }
    for flag, outputs in flagged.items():
        if not flags_set.get(flag, False):
            for name in outputs:
                producers.pop(name, None)
    rank = {name: index for index, name in enumerate(order)}
    names = [n for n in producers if not requested or n in requested]
    names.sort(key=lambda n: rank.get(n, len(rank)))  # stable: unlisted ones keep their place after
    arrays = {}
    for name in names:
        value = producers[name]()
        arrays[name] = value[np.newaxis, ...] if batched else value
    return arrays
