"""tritonstack's own BLS: text in, text out, calling preprocessing → tensorrt_llm → postprocessing.

Why our own instead of upstream ``tensorrt_llm_bls``: upstream hard-codes the model names
``preprocessing`` and ``postprocessing``
(https://github.com/triton-inference-server/tensorrtllm_backend/issues/714), so two LLMs cannot share a
repository; streaming text loses spaces and splits characters unless ``accumulate_tokens`` re-decodes
everything; and the newest version reaches for Triton's own gRPC port on localhost.

Interface (batch dimension first): inputs ``text_input`` STRING[1], ``max_tokens`` INT32[1]; optional
``messages`` STRING[1] (chat; the tokenizer's template is applied by preprocessing), ``stream`` BOOL[1],
``decoder_text_input`` STRING[1] (encoder-decoder engines), ``num_return_sequences`` / ``beam_width`` INT32[1],
``bad_words`` / ``stop_words`` STRING[-1], ``embedding_bias_words`` STRING[-1] /
``embedding_bias_weights`` FP32[-1], ``end_id`` / ``pad_id`` / ``top_k`` INT32[1], ``top_p`` /
``temperature`` / ``length_penalty`` / ``repetition_penalty`` / ``presence_penalty`` /
``frequency_penalty`` FP32[1], ``min_length`` or ``min_tokens`` INT32[1], ``random_seed`` or ``seed``
UINT64[1] (passed on under the name received: the generator renders the names of the target release on
both models), ``exclude_input_in_output`` / ``return_num_input_tokens`` / ``return_num_output_tokens``
BOOL[1], ``context_phase_params`` UINT8[-1] (decode pools), and upstream's optional inputs passed to
the engine as they are: ``return_log_probs`` / ``return_context_logits`` / ``return_generation_logits`` /
``return_perf_metrics``, ``prompt_embedding_table`` / ``prompt_vocab_size`` / ``prompt_table_extra_id``,
``lora_*``, ``guided_decoding_*``. Image inputs and ``num_draft_tokens`` > 0 are refused by name (no
multimodal encoder or draft model is rendered). Outputs ``text_output`` STRING[-1] (flat: one text per
row and beam, as upstream), and, when the engine reports them, ``num_input_tokens`` /
``num_output_tokens`` INT32[1] and whichever of log probs, logits and perf metrics the client asked for.
Request parameters (``request_type: generation_only`` ...) are passed to the engine unchanged.

Parameters: ``preprocessing_model_name``, ``tensorrt_llm_model_name``, ``postprocessing_model_name``
(the generator prefixes them per spec model, e.g. ``tiny-chat_preprocessing``), ``accumulate_tokens``
(streaming: false → each response carries the new text only; true → the whole text so far), and
``max_concurrent_requests`` (decoupled: requests served at once by one instance, default 64).

Streaming detokenization is exact: the BLS sees the whole token stream, so it keeps an
``IncrementalDetokenizer`` per beam and decodes its small windows through the postprocessing model
(one call per step, two sequences as two beams), emitting only new complete text. A client that
cancels stops the engine: through the response iterator's ``cancel()`` where the python backend has it
(Triton ≥ 24.12), otherwise with a ``stop`` request for the same request id, which the TensorRT-LLM
backend and the reference engine both honour. Every request ends with the final flag, also on errors.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils
from engine_stop import stop_engine_request
from model_parameters import ModelParameters, RequestError, bls_request_parameters
from streaming_detokenizer import IncrementalDetokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

# BLS input -> preprocessing input
PREPROCESSING_INPUTS = {
    "text_input": "QUERY",
    "decoder_text_input": "DECODER_QUERY",
    "max_tokens": "REQUEST_OUTPUT_LEN",
    "messages": "MESSAGES",
    "bad_words": "BAD_WORDS_DICT",
    "stop_words": "STOP_WORDS_DICT",
    "embedding_bias_words": "EMBEDDING_BIAS_WORDS",
    "embedding_bias_weights": "EMBEDDING_BIAS_WEIGHTS",
    "end_id": "END_ID",
    "pad_id": "PAD_ID",
    "prompt_table_extra_id": "PROMPT_TABLE_EXTRA_ID",
}
# preprocessing output -> tensorrt_llm input (left out when the request has none: last axis empty)
ENGINE_INPUTS_FROM_PREPROCESSING = {
    "INPUT_ID": "input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "REQUEST_OUTPUT_LEN": "request_output_len",
    "OUT_END_ID": "end_id",
    "OUT_PAD_ID": "pad_id",
    "STOP_WORDS_IDS": "stop_words_list",
    "BAD_WORDS_IDS": "bad_words_list",
    "EMBEDDING_BIAS": "embedding_bias",
    "OUT_PROMPT_TABLE_EXTRA_IDS": "prompt_table_extra_ids",
}
# Encoder-decoder engines only: passed on when the client sent decoder_text_input.
DECODER_INPUTS_FROM_PREPROCESSING = {
    "DECODER_INPUT_ID": "decoder_input_ids",
    "REQUEST_DECODER_INPUT_LEN": "decoder_input_lengths",
}
# BLS input -> tensorrt_llm input, passed on when the client sent it
ENGINE_INPUTS_FROM_CLIENT = {
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "temperature": "temperature",
    "length_penalty": "len_penalty",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "min_length": "min_length",
    "min_tokens": "min_tokens",
    "random_seed": "random_seed",
    "seed": "seed",
    "exclude_input_in_output": "exclude_input_in_output",
    "return_num_input_tokens": "return_num_input_tokens",
    "return_num_output_tokens": "return_num_output_tokens",
    "context_phase_params": "context_phase_params",
    "num_return_sequences": "num_return_sequences",
    "beam_width": "beam_width",
    "stream": "streaming",
    "return_log_probs": "return_log_probs",
    "return_context_logits": "return_context_logits",
    "return_generation_logits": "return_generation_logits",
    "return_perf_metrics": "return_perf_metrics",
    "prompt_embedding_table": "prompt_embedding_table",
    "prompt_vocab_size": "prompt_vocab_size",
    "lora_task_id": "lora_task_id",
    "lora_weights": "lora_weights",
    "lora_config": "lora_config",
    "guided_decoding_guide_type": "guided_decoding_guide_type",
    "guided_decoding_guide": "guided_decoding_guide",
}
TOKEN_COUNT_OUTPUTS = {
    "return_num_input_tokens": "num_input_tokens",
    "return_num_output_tokens": "num_output_tokens",
}
# Engine outputs a client flag asks for, passed back under the same names (upstream BLS
# tensorrt_llm_bls/1/lib/decode.py does the same; the engine fills them only when asked).
FLAGGED_OUTPUTS = {
    "return_log_probs": ("cum_log_probs", "output_log_probs"),
    "return_context_logits": ("context_logits",),
    "return_generation_logits": ("generation_logits",),
    "return_perf_metrics": (
        "kv_cache_alloc_new_blocks",
        "kv_cache_reused_blocks",
        "kv_cache_alloc_total_blocks",
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
    ),
}
# Inputs upstream's BLS declares for features this text-only BLS has no model for: refused by name
# when a request carries them (rather than silently ignored).
UNSUPPORTED_INPUTS = {
    "image_input": "images need a multimodal encoder model, which this stack does not render",
    "image_bytes_input": "images need a multimodal encoder model, which this stack does not render",
    "image_url_input": "images need a multimodal encoder model, which this stack does not render",
    "video_bytes_input": "videos need a multimodal encoder model, which this stack does not render",
}


@dataclass(frozen=True)
class Prompt:
    """One batch row of a client request: its input arrays (batch axis 1), id and request parameters."""

    inputs: dict[str, np.ndarray]
    request_id: str
    parameters_json: str

    def flag(self, name: str) -> bool:
        return name in self.inputs and bool(self.inputs[name].reshape(-1)[0])

    def requested_counts(self) -> list[str]:
        return [output for flag, output in TOKEN_COUNT_OUTPUTS.items() if self.flag(flag)]

    def requested_extras(self) -> list[str]:
        """Engine outputs besides tokens and counts that the client's flags ask for."""
        return [output for flag, outputs in FLAGGED_OUTPUTS.items() if self.flag(flag) for output in outputs]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        parameters = ModelParameters(model_config)
        self._model_name = parameters.model_name
        self._preprocessing = parameters.text("preprocessing_model_name", "preprocessing")
        self._engine = parameters.text("tensorrt_llm_model_name", "tensorrt_llm")
        self._postprocessing = parameters.text("postprocessing_model_name", "postprocessing")
        self._accumulate_tokens = parameters.flag("accumulate_tokens", False)
        self._decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        self._logger = pb_utils.Logger
        # Decoupled: each request is served on a worker so one long stream does not hold up the others
        # queued on this instance (upstream serves them one after another).
        self._workers = (
            ThreadPoolExecutor(
                max_workers=parameters.integer("max_concurrent_requests", 64, minimum=1),
                thread_name_prefix="bls",
            )
            if self._decoupled
            else None
        )

    def finalize(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)

    def execute(self, requests):
        if self._workers is None:
            return [self._respond_once(request) for request in requests]
        for request in requests:
            self._workers.submit(self._serve_decoupled, request)
        return None

    # -- non-decoupled: one response per request ----------------------------------------------------

    def _respond_once(self, request):
        try:
            if _flag(request, "stream"):
                raise RequestError(
                    f"model '{self._model_name}' is not decoupled, so it cannot stream; "
                    "send stream=false or enable streaming for this model in the stack spec"
                )
            rows = [self._generate_complete(prompt) for prompt in _prompts(request)]
            return pb_utils.InferenceResponse(output_tensors=_stack_rows(rows))
        except RequestError as error:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
        except Exception as error:  # noqa: BLE001  (any failure becomes this request's error response)
            self._logger.log_error(f"tensorrt_llm_bls failed: {error!r}")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(error).__name__}: {error}"))

    # -- decoupled: a response per engine step when streaming ----------------------------------------

    def _serve_decoupled(self, request) -> None:
        sender = request.get_response_sender()
        try:
            if _flag(request, "stream"):
                self._stream(request, sender)
            else:
                rows = [self._generate_complete(prompt) for prompt in _prompts(request)]
                sender.send(pb_utils.InferenceResponse(output_tensors=_stack_rows(rows)), flags=FINAL)
            return
        except RequestError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001  (any failure becomes this request's error response)
            self._logger.log_error(f"tensorrt_llm_bls failed: {error!r}")
            message = f"{type(error).__name__}: {error}"
        # Every path ends with the final flag, so no client waits for a response that never comes.
        try:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)), flags=FINAL)
        except Exception as send_error:  # noqa: BLE001  e.g. the client is gone; the flag alone still closes the request
            self._logger.log_warn(f"tensorrt_llm_bls could not send its error response: {send_error!r}")
            try:
                sender.send(flags=FINAL)
            except Exception as final_error:  # noqa: BLE001  (nothing left to tell the client)
                self._logger.log_error(f"tensorrt_llm_bls could not close request: {final_error!r}")

    def _stream(self, request, sender) -> None:
        """Send one response per engine step, then the final flag (with any held-back tail, and
        the token counts when they were asked for)."""
        prompts = _prompts(request)
        if len(prompts) != 1:
            raise RequestError(f"streaming requests carry one prompt, this one has a batch of {len(prompts)}")
        prompt = prompts[0]
        engine_request = self._engine_request(prompt)
        detokenizers: list[IncrementalDetokenizer] = []
        counts: dict[str, np.ndarray] = {}
        responses = engine_request.exec(decoupled=True)
        for response in responses:
            if request.is_cancelled():
                self._stop_engine(responses, prompt.request_id)
                sender.send(flags=FINAL)
                return
            tokens = _engine_tokens(response, self._engine)
            if tokens is None:  # the engine's empty final-flag response
                continue
            counts.update(_token_counts(response, prompt))
            while len(detokenizers) < len(tokens):
                detokenizers.append(IncrementalDetokenizer(self._decode))
            texts = [self._streamed_text(d, beam) for d, beam in zip(detokenizers, tokens)]
            # Counts go out once, with the final response: two more tensors on every token would
            # cost the python backend about a tenth of its streaming throughput. Outputs the client
            # asked for (log probs, perf metrics) go out with the step that made them.
            extras = _engine_outputs(response, prompt.requested_extras())
            sender.send(pb_utils.InferenceResponse(output_tensors=_text_tensors([texts], extras)))
        tails = [d.finish() for d in detokenizers]
        if any(tails) or counts:
            texts = [d.text if self._accumulate_tokens else tail for d, tail in zip(detokenizers, tails)]
            sender.send(
                pb_utils.InferenceResponse(output_tensors=_text_tensors([texts], counts)), flags=FINAL
            )
        else:
            sender.send(flags=FINAL)

    def _streamed_text(self, detokenizer: IncrementalDetokenizer, tokens: list[int]) -> str:
        delta = detokenizer.push(tokens)
        return detokenizer.text if self._accumulate_tokens else delta

    def _stop_engine(self, responses, request_id: str) -> None:
        cancel = getattr(responses, "cancel", None)
        if callable(cancel):
            cancel()
            return
        # Triton < 24.12 cannot cancel a BLS stream; the engine's own `stop` input can.
        stop_engine_request(self._engine, request_id)

    # -- the three steps ---------------------------------------------------------------------------

    def _generate_complete(self, prompt: Prompt) -> tuple[list[str], dict[str, np.ndarray]]:
        """Non-streaming: all tokens of each beam, decoded once by postprocessing."""
        engine_request = self._engine_request(prompt)
        beams: list[list[int]] = []
        counts: dict[str, np.ndarray] = {}
        for response in engine_request.exec(decoupled=True):
            tokens = _engine_tokens(response, self._engine)
            if tokens is None:
                continue
            counts.update(_token_counts(response, prompt))
            # A non-streamed engine answers once; the last value of each asked-for output is its answer.
            counts.update(_engine_outputs(response, prompt.requested_extras()))
            while len(beams) < len(tokens):
                beams.append([])
            for collected, new in zip(beams, tokens):
                collected.extend(new)
        return self._decode(beams), counts

    def _engine_request(self, prompt: Prompt):
        preprocessed = self._preprocess(prompt)
        from_preprocessing = dict(ENGINE_INPUTS_FROM_PREPROCESSING)
        if "decoder_text_input" in prompt.inputs:
            from_preprocessing.update(DECODER_INPUTS_FROM_PREPROCESSING)
        inputs = [
            pb_utils.Tensor(engine_name, preprocessed[name])
            for name, engine_name in from_preprocessing.items()
            if name in preprocessed and preprocessed[name].shape[-1] > 0
        ]
        inputs += [
            pb_utils.Tensor(engine_name, _batched(prompt.inputs[name]))
            for name, engine_name in ENGINE_INPUTS_FROM_CLIENT.items()
            if name in prompt.inputs
        ]
        return pb_utils.InferenceRequest(
            model_name=self._engine,
            inputs=inputs,
            # Token counts only when asked: older tensorrt_llm configs do not declare those outputs.
            requested_output_names=[
                "output_ids",
                "sequence_length",
                *prompt.requested_counts(),
                *prompt.requested_extras(),
            ],
            request_id=prompt.request_id,
            parameters=bls_request_parameters(prompt.parameters_json),
        )

    def _preprocess(self, prompt: Prompt) -> dict[str, np.ndarray]:
        inputs = [
            pb_utils.Tensor(pre_name, _batched(prompt.inputs[name]))
            for name, pre_name in PREPROCESSING_INPUTS.items()
            if name in prompt.inputs
        ]
        response = pb_utils.InferenceRequest(
            model_name=self._preprocessing,
            inputs=inputs,
            requested_output_names=[*ENGINE_INPUTS_FROM_PREPROCESSING, *DECODER_INPUTS_FROM_PREPROCESSING],
        ).exec()
        if response.has_error():
            # Preprocessing errors are the user's (no chat template, prompt too long): pass them on as is.
            raise RequestError(response.error().message())
        return {
            name: tensor.as_numpy()
            for name in [*ENGINE_INPUTS_FROM_PREPROCESSING, *DECODER_INPUTS_FROM_PREPROCESSING]
            if (tensor := pb_utils.get_output_tensor_by_name(response, name)) is not None
        }

    def _decode(self, sequences: Sequence[Sequence[int]]) -> list[str]:
        """Decode sequences through postprocessing: one request, the sequences as beams of one row."""
        width = max(1, max((len(s) for s in sequences), default=0))
        tokens = np.zeros((1, len(sequences), width), dtype=np.int32)
        for beam, sequence in enumerate(sequences):
            tokens[0, beam, : len(sequence)] = sequence
        lengths = np.array([[len(s) for s in sequences]], dtype=np.int32)
        response = pb_utils.InferenceRequest(
            model_name=self._postprocessing,
            inputs=[pb_utils.Tensor("TOKENS_BATCH", tokens), pb_utils.Tensor("SEQUENCE_LENGTH", lengths)],
            requested_output_names=["OUTPUT"],
        ).exec()
        if response.has_error():
            raise RuntimeError(f"{self._postprocessing}: {response.error().message()}")
        texts = pb_utils.get_output_tensor_by_name(response, "OUTPUT").as_numpy().reshape(-1)
        return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]


def _batched(array: np.ndarray) -> np.ndarray:
    """One batch row with its per-request dims. Upstream's BLS declares several scalar inputs with
    ``reshape: { shape: [ ] }``, so they arrive here as [1]; the next model wants them as [1, 1]."""
    return array.reshape(1, 1) if array.ndim == 1 else array


def _flag(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(tensor.as_numpy().reshape(-1)[0])


def _prompts(request) -> list[Prompt]:
    """One prompt per batch row (each keeping a batch axis of 1); the engine needs an id to stop it."""
    arrays = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
    for name, why in UNSUPPORTED_INPUTS.items():
        if name in arrays:
            raise RequestError(f"input '{name}' is not supported: {why}")
    draft_tokens = arrays.get("num_draft_tokens")
    if draft_tokens is not None and int(draft_tokens.reshape(-1)[0]) > 0:
        raise RequestError(
            "num_draft_tokens > 0 needs a draft model (speculative decoding), which this stack does not render"
        )
    arrays.pop("num_draft_tokens", None)
    arrays.pop("use_draft_logits", None)
    for required in ("text_input", "max_tokens"):
        if required not in arrays:
            raise RequestError(f"{required} is required")
    batch_size = arrays["text_input"].shape[0]
    request_id = request.request_id() or f"tritonstack-bls-{uuid.uuid4().hex}"
    return [
        Prompt(
            inputs={name: array[index : index + 1] for name, array in arrays.items()},
            request_id=request_id if batch_size == 1 else f"{request_id}-{index}",
            parameters_json=request.parameters(),
        )
        for index in range(batch_size)
    ]


def _engine_tokens(response, engine: str) -> list[list[int]] | None:
    """The new tokens of each beam in one engine response; None for an empty (final-flag) response."""
    if response.has_error():
        raise RuntimeError(f"{engine}: {response.error().message()}")
    output_ids = pb_utils.get_output_tensor_by_name(response, "output_ids")
    if output_ids is None:
        return None
    ids = output_ids.as_numpy()
    ids = ids.reshape(ids.shape[-2] if ids.ndim >= 2 else 1, -1)
    lengths_tensor = pb_utils.get_output_tensor_by_name(response, "sequence_length")
    lengths = (
        lengths_tensor.as_numpy().reshape(-1) if lengths_tensor is not None else [ids.shape[1]] * ids.shape[0]
    )
    return [ids[beam, : int(lengths[beam])].tolist() for beam in range(ids.shape[0])]


def _token_counts(response, prompt: Prompt) -> dict[str, np.ndarray]:
    counts = {}
    for output in prompt.requested_counts():
        tensor = pb_utils.get_output_tensor_by_name(response, output)
        if tensor is not None:
            counts[output] = tensor.as_numpy().astype(np.int32).reshape(1, 1)
    return counts


def _engine_outputs(response, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named engine outputs present in one response, as the engine sent them."""
    return {
        name: tensor.as_numpy()
        for name in names
        if (tensor := pb_utils.get_output_tensor_by_name(response, name)) is not None
    }


def _text_tensors(rows: Sequence[Sequence[str]], counts: dict[str, np.ndarray]) -> list:
    # Flat over rows and beams, as upstream's postprocessing and BLS return it, so that a client's
    # text_output[0].decode() works.
    text = np.array([t.encode("utf-8") for texts in rows for t in texts], dtype=object)
    return [
        pb_utils.Tensor("text_output", text),
        *(pb_utils.Tensor(name, value) for name, value in counts.items()),
    ]


def _stack_rows(rows: Sequence[tuple[list[str], dict[str, np.ndarray]]]) -> list:
    texts = [row_texts for row_texts, _ in rows]
    counts: dict[str, np.ndarray] = {}
    names = {name for _, row_counts in rows for name in row_counts}
    for name in sorted(names):
        if all(name in row_counts for _, row_counts in rows):
            counts[name] = np.concatenate([row_counts[name] for _, row_counts in rows], axis=0)
    return _text_tensors(texts, counts)
