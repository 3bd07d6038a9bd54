"""Tensor lists of the rendered model set, taken from the backend contract of the target's era.

Upstream's tensors (names, types, dims, optional, reshape, ragged) come from the catalog in
``generator/contract/`` — what upstream's ``config.pbtxt`` files declare for the release era — so a
rendered model declares exactly what NVIDIA's clients and the real backend expect. This module adds
only what is ours, each marked where it is added: the chat ``messages`` input, the decode pool's
``context_phase_params`` input, the prefill ensemble's extra outputs and the postprocessing ``STREAM``
flag for direct callers. The ensembles' step wiring lives here too, computed from the same lists, so
a rename upstream is a catalog edit and the cross-model validator checks the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from generator.contract import BackendContract, TensorContract, load_contract

__all__ = [
    "Tensor",
    "Era",
    "DATA_TYPES",
    "tensorrt_llm_inputs",
    "tensorrt_llm_outputs",
    "preprocessing_inputs",
    "preprocessing_outputs",
    "postprocessing_inputs",
    "postprocessing_outputs",
    "ensemble_inputs",
    "ensemble_outputs",
    "bls_inputs",
    "bls_outputs",
    "EnsembleStep",
    "ensemble_steps",
]

Era = Literal["0.19", "1.x"]

# How we fill the data types upstream leaves to fill_template: FP32 logits (what the engines we plan
# return, and what NVIDIA's clients read), FP16 encoder features and prompt tables (upstream's default;
# BF16 is only for mllama encoders).
DATA_TYPES = {
    "logits_datatype": "TYPE_FP32",
    "encoder_input_features_data_type": "TYPE_FP16",
    "prompt_embedding_table_data_type": "TYPE_FP16",
}


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # TYPE_INT32 ...
    dims: tuple[int, ...]
    optional: bool = False
    scalar: bool = False  # reshape: { shape: [ ] } — a per-request scalar sent as [1]
    ragged: bool = False  # allow_ragged_batch: true


def _ours(name: str, data_type: str, *dims: int) -> Tensor:
    """An optional tensor of tritonstack's own, beside upstream's."""
    return Tensor(name, data_type, dims, optional=True)


def _resolve(contract: BackendContract, tensor: TensorContract) -> Tensor:
    data_type = tensor.data_type
    if data_type.startswith("${"):
        data_type = DATA_TYPES[data_type[2:-1]]
        if not contract.accepts_type(tensor.data_type, data_type):
            raise ValueError(f"{data_type} is not a value upstream allows for {tensor.data_type}")
    return Tensor(tensor.name, data_type, tensor.dims, tensor.optional, tensor.reshape, tensor.ragged)


def _inputs(era: Era, kind: str) -> list[Tensor]:
    contract = load_contract(era)
    return [_resolve(contract, t) for t in contract.model(kind).inputs]


def _outputs(era: Era, kind: str) -> list[Tensor]:
    contract = load_contract(era)
    return [_resolve(contract, t) for t in contract.model(kind).outputs]


def tensorrt_llm_inputs(era: Era) -> list[Tensor]:
    """Inputs of the ``tensorrt_llm`` model (and its context/generation copies): upstream's, all."""
    return _inputs(era, "tensorrt_llm")


def tensorrt_llm_outputs(era: Era) -> list[Tensor]:
    return _outputs(era, "tensorrt_llm")


def preprocessing_inputs(era: Era) -> list[Tensor]:
    # Ours: MESSAGES, JSON chat messages rendered with the tokenizer's chat template.
    return [*_inputs(era, "preprocessing"), _ours("MESSAGES", "TYPE_STRING", 1)]


def preprocessing_outputs(era: Era) -> list[Tensor]:
    return _outputs(era, "preprocessing")


def postprocessing_inputs(era: Era) -> list[Tensor]:
    # Ours: STREAM, for callers that send chunks of a stream directly (the ensemble cannot: see
    # templates/model_repo/postprocessing/model.py).
    return [*_inputs(era, "postprocessing"), _ours("STREAM", "TYPE_BOOL", 1)]


def postprocessing_outputs(era: Era) -> list[Tensor]:
    return _outputs(era, "postprocessing")


def _client_additions(decode: bool) -> list[Tensor]:
    """Ours on the ensemble and BLS: chat messages; a decode pool also takes the prefill's
    ``context_phase_params`` (the router's two-phase flow)."""
    added = [_ours("messages", "TYPE_STRING", 1)]
    if decode:
        added.append(_ours("context_phase_params", "TYPE_UINT8", -1))
    return added


def ensemble_inputs(era: Era, *, decode: bool = False) -> list[Tensor]:
    """Client-facing inputs of the ensemble: upstream's full set (``stream`` always declared, as
    upstream does: NVIDIA's clients always send it) plus ours."""
    return [*_inputs(era, "ensemble"), *_client_additions(decode)]


def bls_inputs(era: Era, *, decode: bool = False) -> list[Tensor]:
    return [*_inputs(era, "tensorrt_llm_bls"), *_client_additions(decode)]


def ensemble_outputs(era: Era, *, prefill: bool = False) -> list[Tensor]:
    tensors = _outputs(era, "ensemble")
    if prefill:
        # Ours: a prefill ensemble also returns what the decode pool needs, the opaque
        # context_phase_params and the first token's ids.
        engine = {t.name: t for t in tensorrt_llm_outputs(era)}
        tensors += [engine["context_phase_params"], engine["output_ids"]]
    return tensors


def bls_outputs(era: Era) -> list[Tensor]:
    return _outputs(era, "tensorrt_llm_bls")


@dataclass(frozen=True)
class EnsembleStep:
    kind: Literal["preprocessing", "llm", "postprocessing"]
    input_map: tuple[tuple[str, str], ...]  # (model input, ensemble tensor)
    output_map: tuple[tuple[str, str], ...]  # (model output, ensemble tensor)


# Client input → preprocessing input (upstream's ensemble wiring).
_PREPROCESSING_FROM_CLIENT = {
    "QUERY": "text_input",
    "MESSAGES": "messages",
    "DECODER_QUERY": "decoder_text_input",
    "REQUEST_OUTPUT_LEN": "max_tokens",
    "BAD_WORDS_DICT": "bad_words",
    "STOP_WORDS_DICT": "stop_words",
    "EMBEDDING_BIAS_WORDS": "embedding_bias_words",
    "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights",
    "END_ID": "end_id",
    "PAD_ID": "pad_id",
    "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id",
}
# Preprocessing output → engine input, through an internal ensemble tensor.
_ENGINE_FROM_PREPROCESSING = {
    "INPUT_ID": ("input_ids", "_INPUT_ID"),
    "DECODER_INPUT_ID": ("decoder_input_ids", "_DECODER_INPUT_ID"),
    "REQUEST_INPUT_LEN": ("input_lengths", "_REQUEST_INPUT_LEN"),
    "REQUEST_DECODER_INPUT_LEN": ("decoder_input_lengths", "_REQUEST_DECODER_INPUT_LEN"),
    "REQUEST_OUTPUT_LEN": ("request_output_len", "_REQUEST_OUTPUT_LEN"),
    "OUT_END_ID": ("end_id", "_PREPROCESSOR_END_ID"),
    "OUT_PAD_ID": ("pad_id", "_PREPROCESSOR_PAD_ID"),
    "EMBEDDING_BIAS": ("embedding_bias", "_EMBEDDING_BIAS"),
    "STOP_WORDS_IDS": ("stop_words_list", "_STOP_WORDS_IDS"),
    "BAD_WORDS_IDS": ("bad_words_list", "_BAD_WORDS_IDS"),
    "OUT_PROMPT_TABLE_EXTRA_IDS": ("prompt_table_extra_ids", "_OUT_PROMPT_TABLE_EXTRA_IDS"),
}
# Client inputs that reach the engine under another name; every other client input whose name the
# engine also declares is passed under that same name.
_ENGINE_RENAMED = {"top_k": "runtime_top_k", "top_p": "runtime_top_p", "length_penalty": "len_penalty", "stream": "streaming"}
# Client inputs the preprocessing step consumes: never passed to the engine directly.
_CONSUMED_BY_PREPROCESSING = {*_PREPROCESSING_FROM_CLIENT.values()}


def ensemble_steps(era: Era, *, decode: bool = False, prefill: bool = False) -> list[EnsembleStep]:
    """preprocessing → tensorrt_llm (or a context/generation copy) → postprocessing."""
    pre_inputs = {t.name for t in preprocessing_inputs(era)}
    pre_outputs = {t.name for t in preprocessing_outputs(era)}
    pre = EnsembleStep(
        "preprocessing",
        input_map=tuple((name, client) for name, client in _PREPROCESSING_FROM_CLIENT.items() if name in pre_inputs),
        output_map=tuple(
            (name, internal) for name, (_, internal) in _ENGINE_FROM_PREPROCESSING.items() if name in pre_outputs
        ),
    )
    engine_inputs = {t.name for t in tensorrt_llm_inputs(era)}
    llm_inputs = [
        (engine, internal) for name, (engine, internal) in _ENGINE_FROM_PREPROCESSING.items() if name in pre_outputs
    ]
    for tensor in ensemble_inputs(era, decode=decode):
        if tensor.name in _CONSUMED_BY_PREPROCESSING:
            continue
        engine = _ENGINE_RENAMED.get(tensor.name, tensor.name)
        if engine in engine_inputs:
            llm_inputs.append((engine, tensor.name))
    # A prefill ensemble also returns the first token's ids, so the tensor that feeds
    # postprocessing is then an ensemble output under the tensorrt_llm name.
    tokens = "output_ids" if prefill else "_TOKENS_BATCH"
    client_outputs = {t.name for t in ensemble_outputs(era, prefill=prefill)}
    llm_outputs = [("output_ids", tokens), ("sequence_length", "_SEQUENCE_LENGTH")]
    llm_outputs += [
        (t.name, t.name)
        for t in tensorrt_llm_outputs(era)
        if t.name in client_outputs and t.name not in {"output_ids", "sequence_length"}
    ]
    llm = EnsembleStep("llm", tuple(llm_inputs), tuple(llm_outputs))
    post = EnsembleStep(
        "postprocessing",
        input_map=(("TOKENS_BATCH", tokens), ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH")),
        output_map=(("OUTPUT", "text_output"),),
    )
    return [pre, llm, post]

