"""Preprocessing: prompt text (or chat messages) in, token ids and request tensors for the engine out.

Tensor contract (text-only subset of upstream ``preprocessing``,
https://github.com/triton-inference-server/tensorrtllm_backend/blob/main/all_models/inflight_batcher_llm/preprocessing/config.pbtxt),
each with the batch dimension first:

inputs   QUERY STRING[1]; REQUEST_OUTPUT_LEN INT32[1]; optional DECODER_QUERY STRING[1],
         BAD_WORDS_DICT / STOP_WORDS_DICT / EMBEDDING_BIAS_WORDS STRING[-1], EMBEDDING_BIAS_WEIGHTS FP32[-1],
         END_ID / PAD_ID INT32[1], PROMPT_TABLE_EXTRA_ID UINT64[1], and our MESSAGES STRING[1]
outputs  INPUT_ID INT32[-1]; REQUEST_INPUT_LEN INT32[1]; DECODER_INPUT_ID INT32[-1];
         REQUEST_DECODER_INPUT_LEN INT32[1]; BAD_WORDS_IDS / STOP_WORDS_IDS INT32[2,-1];
         EMBEDDING_BIAS FP32[-1]; REQUEST_OUTPUT_LEN INT32[-1]; OUT_END_ID / OUT_PAD_ID INT32[1];
         OUT_PROMPT_TABLE_EXTRA_IDS UINT64[-1] (only when PROMPT_TABLE_EXTRA_ID was sent, as upstream).
         Nothing else: perf metrics are the client's choice (``return_perf_metrics`` goes from the
         ensemble straight to the engine), as in upstream's ensemble.

Parameters: ``tokenizer_dir`` (required), ``add_special_tokens`` (default true), ``max_input_len``
(optional: a longer prompt gets an error response and never reaches the engine).

A request that cannot be served (no chat template for MESSAGES, prompt too long, malformed JSON) gets
an error response naming the problem; the other requests of the same batch are served normally.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils
from model_parameters import ModelParameters, RequestError, load_tokenizer
from prompt_encoder import PromptEncoder, pad_rows


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = ModelParameters.from_args(args)
        tokenizer_dir = parameters.path("tokenizer_dir")
        max_input_len = parameters.integer("max_input_len", 0, minimum=0) or None
        self._encoder = PromptEncoder(
            load_tokenizer(tokenizer_dir, parameters.model_name),
            tokenizer_dir,
            add_special_tokens=parameters.flag("add_special_tokens", True),
            max_input_len=max_input_len,
        )
        self._logger = pb_utils.Logger

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._preprocess(request)))
            except RequestError as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
            except Exception as error:  # noqa: BLE001  (a bug here must fail this request, not the model instance)
                self._logger.log_error(f"preprocessing failed: {error!r}")
                message = f"preprocessing failed: {type(error).__name__}: {error}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def _preprocess(self, request) -> list:
        encoder = self._encoder
        queries = _strings(request, "QUERY")
        if queries is None:
            raise RequestError("QUERY is required (the ensemble's text_input)")
        batch_size = len(queries)
        messages = _strings(request, "MESSAGES")
        prompt_rows = []
        for row, query in enumerate(queries):
            chat = messages[row][0] if messages is not None and messages[row] else ""
            prompt_rows.append(encoder.encode_messages(chat) if chat else encoder.encode_query(query[0]))
        input_ids, input_lengths = pad_rows(prompt_rows, encoder.pad_id)

        decoder_queries = _strings(request, "DECODER_QUERY")
        if decoder_queries is None:
            decoder_rows = [[encoder.pad_id] for _ in range(batch_size)]
        else:
            decoder_rows = [encoder.encode_query(query[0]) for query in decoder_queries]
        decoder_ids, decoder_lengths = pad_rows(decoder_rows, encoder.pad_id)

        output_len = _array(request, "REQUEST_OUTPUT_LEN")
        if output_len is None:
            raise RequestError("REQUEST_OUTPUT_LEN is required (the ensemble's max_tokens)")

        tensors = [
            pb_utils.Tensor("INPUT_ID", input_ids),
            pb_utils.Tensor("REQUEST_INPUT_LEN", input_lengths),
            pb_utils.Tensor("DECODER_INPUT_ID", decoder_ids),
            pb_utils.Tensor("REQUEST_DECODER_INPUT_LEN", decoder_lengths),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", output_len.astype(np.int32).reshape(batch_size, -1)),
            pb_utils.Tensor(
                "BAD_WORDS_IDS", encoder.word_lists(_strings(request, "BAD_WORDS_DICT"), batch_size)
            ),
            pb_utils.Tensor(
                "STOP_WORDS_IDS", encoder.word_lists(_strings(request, "STOP_WORDS_DICT"), batch_size)
            ),
            pb_utils.Tensor(
                "EMBEDDING_BIAS",
                encoder.embedding_bias(
                    _strings(request, "EMBEDDING_BIAS_WORDS"),
                    _array(request, "EMBEDDING_BIAS_WEIGHTS"),
                    batch_size,
                ),
            ),
            pb_utils.Tensor("OUT_END_ID", _per_row_id(request, "END_ID", encoder.end_id, batch_size)),
            pb_utils.Tensor("OUT_PAD_ID", _per_row_id(request, "PAD_ID", encoder.pad_id, batch_size)),
        ]
        extra_ids = _array(request, "PROMPT_TABLE_EXTRA_ID")
        if extra_ids is not None:
            # One extra id per prompt token (it keys prompt-table reuse in the KV cache), as upstream.
            repeated = np.repeat(
                extra_ids.astype(np.uint64).reshape(batch_size, 1), input_ids.shape[1], axis=1
            )
            tensors.append(pb_utils.Tensor("OUT_PROMPT_TABLE_EXTRA_IDS", repeated))
        return tensors


def _array(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _strings(request, name: str) -> list[list[str]] | None:
    """A STRING input as rows of Python strings (Triton hands over bytes)."""
    array = _array(request, name)
    if array is None:
        return None
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    try:
        return [[_text(value) for value in row] for row in rows]
    except UnicodeDecodeError:
        raise RequestError(f"{name} is not valid UTF-8 text") from None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _per_row_id(request, name: str, default: int, batch_size: int) -> np.ndarray:
    sent = _array(request, name)
    if sent is None:
        return np.full((batch_size, 1), default, dtype=np.int32)
    return sent.astype(np.int32).reshape(batch_size, 1)
