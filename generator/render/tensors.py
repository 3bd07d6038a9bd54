"""Tensor contracts of the model set, per TensorRT-LLM naming era.

Facts from the TRT-LLM backend's templates (see shared/reference/triton-trtllm-backend.md §2): the
0.19-era names (``min_length``, ``random_seed``) and the 1.x names (``min_tokens``, ``seed``,
``return_num_*``, ``prompt_embedding_table_data_type``). Each tensor is declared exactly once here;
the templates only lay these lists out. The ensembles' step wiring lives here too, so a rename is
one edit and the cross-model validator checks the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Tensor",
    "Era",
    "tensorrt_llm_inputs",
    "tensorrt_llm_outputs",
    "PREPROCESSING_INPUTS",
    "PREPROCESSING_OUTPUTS",
    "POSTPROCESSING_INPUTS",
    "POSTPROCESSING_OUTPUTS",
    "ensemble_inputs",
    "ensemble_outputs",
    "EnsembleStep",
    "ensemble_steps",
    "bls_outputs",
]

Era = Literal["0.19", "1.x"]


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # TYPE_INT32 ... or a parameter name resolved by the template context
    dims: tuple[int, ...]
    optional: bool = False
    scalar: bool = False  # reshape: { shape: [ ] } — a per-request scalar sent as [1]
    ragged: bool = False  # allow_ragged_batch: true


def _opt(name: str, data_type: str, *dims: int, scalar: bool = False, ragged: bool = False) -> Tensor:
    return Tensor(name, data_type, dims, optional=True, scalar=scalar, ragged=ragged)


def _req(name: str, data_type: str, *dims: int, scalar: bool = False) -> Tensor:
    return Tensor(name, data_type, dims, optional=False, scalar=scalar)


def _names(era: Era) -> dict[str, str]:
    if era == "0.19":
        return {"min": "min_length", "seed": "random_seed"}
    return {"min": "min_tokens", "seed": "seed"}


def tensorrt_llm_inputs(era: Era, logits_type: str, prompt_table_type: str) -> list[Tensor]:
    """Inputs of the ``tensorrt_llm`` model (and its context/generation copies)."""
    n = _names(era)
    tensors = [
        _opt("input_ids", "TYPE_INT32", -1, ragged=True),
        _opt("encoder_input_features", "TYPE_FP16", -1, -1, ragged=True),  # TYPE_BF16 only for mllama
        _opt("encoder_output_lengths", "TYPE_INT32", 1, scalar=True),
        _req("input_lengths", "TYPE_INT32", 1, scalar=True),
        _req("request_output_len", "TYPE_INT32", 1, scalar=True),
        _opt("num_return_sequences", "TYPE_INT32", 1, scalar=True),
        _opt("draft_input_ids", "TYPE_INT32", -1, ragged=True),
        _opt("decoder_input_ids", "TYPE_INT32", -1, ragged=True),
        _opt("decoder_input_lengths", "TYPE_INT32", 1, scalar=True),
        _opt("draft_logits", logits_type, -1, -1, ragged=True),
        _opt("draft_acceptance_threshold", "TYPE_FP32", 1, scalar=True),
        _opt("end_id", "TYPE_INT32", 1, scalar=True),
        _opt("pad_id", "TYPE_INT32", 1, scalar=True),
        _opt("stop_words_list", "TYPE_INT32", 2, -1, ragged=True),
        _opt("bad_words_list", "TYPE_INT32", 2, -1, ragged=True),
        _opt("embedding_bias", "TYPE_FP32", -1, ragged=True),
        _opt("beam_width", "TYPE_INT32", 1, scalar=True),
        _opt("temperature", "TYPE_FP32", 1, scalar=True),
        _opt("runtime_top_k", "TYPE_INT32", 1, scalar=True),
        _opt("runtime_top_p", "TYPE_FP32", 1, scalar=True),
        _opt("runtime_top_p_min", "TYPE_FP32", 1, scalar=True),
        _opt("runtime_top_p_decay", "TYPE_FP32", 1, scalar=True),
        _opt("runtime_top_p_reset_ids", "TYPE_INT32", 1, scalar=True),
        _opt("len_penalty", "TYPE_FP32", 1, scalar=True),
        _opt("early_stopping", "TYPE_BOOL", 1, scalar=True),
        _opt("repetition_penalty", "TYPE_FP32", 1, scalar=True),
        _opt(n["min"], "TYPE_INT32", 1, scalar=True),
        _opt("beam_search_diversity_rate", "TYPE_FP32", 1, scalar=True),
        _opt("presence_penalty", "TYPE_FP32", 1, scalar=True),
        _opt("frequency_penalty", "TYPE_FP32", 1, scalar=True),
        _opt(n["seed"], "TYPE_UINT64", 1, scalar=True),
        _opt("return_log_probs", "TYPE_BOOL", 1, scalar=True),
        _opt("return_context_logits", "TYPE_BOOL", 1, scalar=True),
        _opt("return_generation_logits", "TYPE_BOOL", 1, scalar=True),
        _opt("return_perf_metrics", "TYPE_BOOL", 1, scalar=True),
    ]
    if era == "1.x":
        tensors += [
            _opt("return_num_input_tokens", "TYPE_BOOL", 1, scalar=True),
            _opt("return_num_output_tokens", "TYPE_BOOL", 1, scalar=True),
        ]
    tensors += [
        _opt("exclude_input_in_output", "TYPE_BOOL", 1, scalar=True),
        _opt("stop", "TYPE_BOOL", 1, scalar=True),
        _opt("streaming", "TYPE_BOOL", 1, scalar=True),
        _opt("prompt_embedding_table", prompt_table_type, -1, -1, ragged=True),
        _opt("prompt_table_extra_ids", "TYPE_UINT64", -1, ragged=True),
        _opt("prompt_vocab_size", "TYPE_INT32", 1, scalar=True),
        _opt("cross_attention_mask", "TYPE_BOOL", -1, -1, ragged=True),
        _opt("lora_task_id", "TYPE_UINT64", 1, scalar=True),
        _opt("lora_weights", "TYPE_FP16", -1, -1, ragged=True),
        _opt("lora_config", "TYPE_INT32", -1, 3, ragged=True),
        _opt("context_phase_params", "TYPE_UINT8", -1, ragged=True),
        _opt("guided_decoding_guide_type", "TYPE_STRING", 1, ragged=True),
        _opt("guided_decoding_guide", "TYPE_STRING", 1, ragged=True),
    ]
    return tensors


def tensorrt_llm_outputs(era: Era, logits_type: str) -> list[Tensor]:
    tensors = [
        _req("output_ids", "TYPE_INT32", -1, -1),
        _req("sequence_length", "TYPE_INT32", -1),
        _req("cum_log_probs", "TYPE_FP32", -1),
        _req("output_log_probs", "TYPE_FP32", -1, -1),
        _req("context_logits", logits_type, -1, -1),
        _req("generation_logits", logits_type, -1, -1, -1),
        _req("batch_index", "TYPE_INT32", 1),
        _req("sequence_index", "TYPE_INT32", 1),
        _req("context_phase_params", "TYPE_UINT8", -1),
        _req("kv_cache_alloc_new_blocks", "TYPE_INT32", 1),
        _req("kv_cache_reused_blocks", "TYPE_INT32", 1),
        _req("kv_cache_alloc_total_blocks", "TYPE_INT32", 1),
        _req("arrival_time_ns", "TYPE_INT64", 1),
        _req("first_scheduled_time_ns", "TYPE_INT64", 1),
        _req("first_token_time_ns", "TYPE_INT64", 1),
        _req("last_token_time_ns", "TYPE_INT64", 1),
        _req("acceptance_rate", "TYPE_FP32", 1),
        _req("total_accepted_draft_tokens", "TYPE_INT32", 1),
        _req("total_draft_tokens", "TYPE_INT32", 1),
    ]
    if era == "1.x":
        tensors += [_req("num_input_tokens", "TYPE_INT32", 1), _req("num_output_tokens", "TYPE_INT32", 1)]
    return tensors


PREPROCESSING_INPUTS = [
    _req("QUERY", "TYPE_STRING", 1),
    _opt("MESSAGES", "TYPE_STRING", 1),  # ours: JSON chat messages, rendered with the chat template
    _opt("DECODER_QUERY", "TYPE_STRING", 1),
    _req("REQUEST_OUTPUT_LEN", "TYPE_INT32", 1),
    _opt("BAD_WORDS_DICT", "TYPE_STRING", -1),
    _opt("STOP_WORDS_DICT", "TYPE_STRING", -1),
    _opt("EMBEDDING_BIAS_WORDS", "TYPE_STRING", -1),
    _opt("EMBEDDING_BIAS_WEIGHTS", "TYPE_FP32", -1),
    _opt("END_ID", "TYPE_INT32", 1),
    _opt("PAD_ID", "TYPE_INT32", 1),
    _opt("PROMPT_TABLE_EXTRA_ID", "TYPE_UINT64", 1),
]

PREPROCESSING_OUTPUTS = [
    _req("INPUT_ID", "TYPE_INT32", -1),
    _req("REQUEST_INPUT_LEN", "TYPE_INT32", 1),
    _req("DECODER_INPUT_ID", "TYPE_INT32", -1),
    _req("REQUEST_DECODER_INPUT_LEN", "TYPE_INT32", 1),
    _req("BAD_WORDS_IDS", "TYPE_INT32", 2, -1),
    _req("STOP_WORDS_IDS", "TYPE_INT32", 2, -1),
    _req("EMBEDDING_BIAS", "TYPE_FP32", -1),
    _req("REQUEST_OUTPUT_LEN", "TYPE_INT32", -1),
    _req("OUT_END_ID", "TYPE_INT32", 1),
    _req("OUT_PAD_ID", "TYPE_INT32", 1),
    _req("OUT_PROMPT_TABLE_EXTRA_IDS", "TYPE_UINT64", -1),
    _req("OUT_RETURN_PERF_METRICS", "TYPE_BOOL", 1),  # ours: always true, see POSTPROCESSING_INPUTS
]

# Streaming through an ensemble hands postprocessing one chunk of tokens per request, and decoding
# chunks alone loses spaces and splits multibyte characters. Postprocessing therefore keeps a
# detokenizer per stream, keyed by the request's arrival time from the tensorrt_llm step (requested
# for every request by the preprocessing output OUT_RETURN_PERF_METRICS). The key has to come from
# the decoupled step itself: Triton refuses an ensemble step that mixes tensors of a decoupled model
# with ensemble inputs ("receives inputs originated from different decoupled models").
POSTPROCESSING_INPUTS = [
    _req("TOKENS_BATCH", "TYPE_INT32", -1, -1),
    _req("SEQUENCE_LENGTH", "TYPE_INT32", -1),
    _opt("ARRIVAL_TIME_NS", "TYPE_INT64", 1),  # ours: names the stream a chunk belongs to
]

POSTPROCESSING_OUTPUTS = [_req("OUTPUT", "TYPE_STRING", -1)]


def ensemble_inputs(era: Era, *, streaming: bool = True, decode: bool = False) -> list[Tensor]:
    """Client-facing inputs of the ensemble and BLS (no reshape: each is sent as [1]).

    A model served without streaming has no ``stream`` input, so asking it to stream is refused by
    Triton up front instead of failing inside the backend."""
    n = _names(era)
    tensors = [
        _req("text_input", "TYPE_STRING", 1),
        _opt("messages", "TYPE_STRING", 1),
        _opt("decoder_text_input", "TYPE_STRING", 1),
        _req("max_tokens", "TYPE_INT32", 1),
        _opt("num_return_sequences", "TYPE_INT32", 1),
        _opt("bad_words", "TYPE_STRING", -1),
        _opt("stop_words", "TYPE_STRING", -1),
        _opt("exclude_input_in_output", "TYPE_BOOL", 1),
        _opt("end_id", "TYPE_INT32", 1),
        _opt("pad_id", "TYPE_INT32", 1),
        _opt("top_k", "TYPE_INT32", 1),
        _opt("top_p", "TYPE_FP32", 1),
        _opt("temperature", "TYPE_FP32", 1),
        _opt("length_penalty", "TYPE_FP32", 1),
        _opt("repetition_penalty", "TYPE_FP32", 1),
        _opt(n["min"], "TYPE_INT32", 1),
        _opt("presence_penalty", "TYPE_FP32", 1),
        _opt("frequency_penalty", "TYPE_FP32", 1),
        _opt(n["seed"], "TYPE_UINT64", 1),
        _opt("return_log_probs", "TYPE_BOOL", 1),
        _opt("return_context_logits", "TYPE_BOOL", 1),
        _opt("return_generation_logits", "TYPE_BOOL", 1),
    ]
    if era == "1.x":
        tensors += [
            _opt("return_num_input_tokens", "TYPE_BOOL", 1),
            _opt("return_num_output_tokens", "TYPE_BOOL", 1),
        ]
    tensors += [
        _opt("beam_width", "TYPE_INT32", 1),
        *([_opt("stream", "TYPE_BOOL", 1)] if streaming else []),
        _opt("embedding_bias_words", "TYPE_STRING", -1),
        _opt("embedding_bias_weights", "TYPE_FP32", -1),
    ]
    if decode:
        tensors.append(_opt("context_phase_params", "TYPE_UINT8", -1))
    return tensors


# Outputs the ensemble takes over from the tensorrt_llm step under the same name.
_PASSTHROUGH_OUTPUTS = (
    "cum_log_probs",
    "output_log_probs",
    "batch_index",
    "sequence_index",
    "kv_cache_alloc_new_blocks",
    "kv_cache_reused_blocks",
    "kv_cache_alloc_total_blocks",
    "arrival_time_ns",
    "first_scheduled_time_ns",
    "first_token_time_ns",
    "last_token_time_ns",
)


def ensemble_outputs(era: Era, *, prefill: bool = False) -> list[Tensor]:
    by_name = {t.name: t for t in tensorrt_llm_outputs(era, "TYPE_FP32")}
    tensors = [_req("text_output", "TYPE_STRING", -1)]
    tensors += [by_name[name] for name in _PASSTHROUGH_OUTPUTS]
    if era == "1.x":
        tensors += [by_name["num_input_tokens"], by_name["num_output_tokens"]]
    if prefill:
        tensors += [by_name["context_phase_params"], by_name["output_ids"]]
    return tensors


@dataclass(frozen=True)
class EnsembleStep:
    kind: Literal["preprocessing", "llm", "postprocessing"]
    input_map: tuple[tuple[str, str], ...]  # (model input, ensemble tensor)
    output_map: tuple[tuple[str, str], ...]  # (model output, ensemble tensor)


def ensemble_steps(
    era: Era, *, streaming: bool = True, decode: bool = False, prefill: bool = False
) -> list[EnsembleStep]:
    """preprocessing → tensorrt_llm (or a context/generation copy) → postprocessing."""
    n = _names(era)
    pre = EnsembleStep(
        "preprocessing",
        input_map=(
            ("QUERY", "text_input"),
            ("MESSAGES", "messages"),
            ("DECODER_QUERY", "decoder_text_input"),
            ("REQUEST_OUTPUT_LEN", "max_tokens"),
            ("BAD_WORDS_DICT", "bad_words"),
            ("STOP_WORDS_DICT", "stop_words"),
            ("EMBEDDING_BIAS_WORDS", "embedding_bias_words"),
            ("EMBEDDING_BIAS_WEIGHTS", "embedding_bias_weights"),
            ("END_ID", "end_id"),
            ("PAD_ID", "pad_id"),
        ),
        output_map=(
            ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"),
            ("INPUT_ID", "_INPUT_ID"),
            ("REQUEST_DECODER_INPUT_LEN", "_REQUEST_DECODER_INPUT_LEN"),
            ("DECODER_INPUT_ID", "_DECODER_INPUT_ID"),
            ("REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"),
            ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
            ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"),
            ("EMBEDDING_BIAS", "_EMBEDDING_BIAS"),
            ("OUT_END_ID", "_PREPROCESSOR_END_ID"),
            ("OUT_PAD_ID", "_PREPROCESSOR_PAD_ID"),
            ("OUT_RETURN_PERF_METRICS", "_RETURN_PERF_METRICS"),
        ),
    )
    llm_inputs = [
        ("input_ids", "_INPUT_ID"),
        ("decoder_input_ids", "_DECODER_INPUT_ID"),
        ("input_lengths", "_REQUEST_INPUT_LEN"),
        ("decoder_input_lengths", "_REQUEST_DECODER_INPUT_LEN"),
        ("exclude_input_in_output", "exclude_input_in_output"),
        ("request_output_len", "_REQUEST_OUTPUT_LEN"),
        ("end_id", "_PREPROCESSOR_END_ID"),
        ("pad_id", "_PREPROCESSOR_PAD_ID"),
        ("embedding_bias", "_EMBEDDING_BIAS"),
        ("runtime_top_k", "top_k"),
        ("runtime_top_p", "top_p"),
        ("temperature", "temperature"),
        ("len_penalty", "length_penalty"),
        ("repetition_penalty", "repetition_penalty"),
        (n["min"], n["min"]),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        (n["seed"], n["seed"]),
        ("return_log_probs", "return_log_probs"),
        ("return_context_logits", "return_context_logits"),
        ("return_generation_logits", "return_generation_logits"),
        ("return_perf_metrics", "_RETURN_PERF_METRICS"),
    ]
    if era == "1.x":
        llm_inputs += [
            ("return_num_input_tokens", "return_num_input_tokens"),
            ("return_num_output_tokens", "return_num_output_tokens"),
        ]
    llm_inputs += [
        ("num_return_sequences", "num_return_sequences"),
        ("beam_width", "beam_width"),
        *([("streaming", "stream")] if streaming else []),
        ("stop_words_list", "_STOP_WORDS_IDS"),
        ("bad_words_list", "_BAD_WORDS_IDS"),
    ]
    if decode:
        llm_inputs.append(("context_phase_params", "context_phase_params"))
    # A prefill ensemble also returns the first token's ids, so the tensor that feeds
    # postprocessing is then an ensemble output under the tensorrt_llm name.
    tokens = "output_ids" if prefill else "_TOKENS_BATCH"
    llm_outputs = [("output_ids", tokens), ("sequence_length", "_SEQUENCE_LENGTH")]
    llm_outputs += [(name, name) for name in _PASSTHROUGH_OUTPUTS]
    if era == "1.x":
        llm_outputs += [("num_input_tokens", "num_input_tokens"), ("num_output_tokens", "num_output_tokens")]
    if prefill:
        llm_outputs.append(("context_phase_params", "context_phase_params"))
    llm = EnsembleStep("llm", tuple(llm_inputs), tuple(llm_outputs))
    post = EnsembleStep(
        "postprocessing",
        input_map=(
            ("TOKENS_BATCH", tokens),
            ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH"),
            ("ARRIVAL_TIME_NS", "arrival_time_ns"),
        ),
        output_map=(("OUTPUT", "text_output"),),
    )
    return [pre, llm, post]


def bls_outputs(era: Era) -> list[Tensor]:
    tensors = [_req("text_output", "TYPE_STRING", -1)]
    if era == "1.x":
        tensors += [_req("num_input_tokens", "TYPE_INT32", 1), _req("num_output_tokens", "TYPE_INT32", 1)]
    return tensors
