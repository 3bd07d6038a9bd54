"""Postprocessing: token ids from the engine in, text out — exact also when streaming.

Tensor contract (upstream ``postprocessing``, batch dimension first): inputs TOKENS_BATCH INT32[-1,-1]
(beams × tokens) and SEQUENCE_LENGTH INT32[-1] (per beam), plus our optional STREAM BOOL[1] for
direct callers; output OUTPUT STRING[-1]: one text per (row, beam), **flat**, the way upstream's model
returns it, so that a client's ``result.as_numpy("text_output")[0].decode()`` works (upstream
``postprocessing/1/model.py`` builds a flat list over batch and beams:
https://github.com/NVIDIA/TensorRT-LLM/blob/2a9abd9536aa62ad3e4b9314be9286b1b1be523b/triton_backend/all_models/inflight_batcher_llm/postprocessing/1/model.py).

Parameters: ``tokenizer_dir`` (required), ``skip_special_tokens`` (default true), ours ``streaming``
(whether the pool's engine streams; default true), ``stream_state_capacity`` (default 4096 streams)
and ``stream_state_idle_seconds`` (default 600).

Why streaming needs state: in an ensemble every streamed chunk reaches this model as its own request,
and decoding each chunk alone loses SentencePiece leading spaces and splits multibyte characters
(tensorrtllm_backend #112, #332, #34, #192). So the chunks of one stream are decoded incrementally by
``streaming_detokenizer.IncrementalDetokenizer``: only new complete text is emitted, a trailing
incomplete character waits for its remaining bytes.

What ties the chunks of one stream together: Triton refuses an ensemble step that mixes tensors of a
decoupled model with ensemble inputs ("receives inputs originated from different decoupled models"),
so the client's ``stream`` flag cannot reach this step once ``tensorrt_llm`` is decoupled. What does
reach it is the request id, which the ensemble propagates from the client to its steps. (The engine's
``arrival_time_ns`` is sent only when the client asks for perf metrics, so it cannot be the key.)

How a request is decoded:

* pool not streaming, or STREAM false → the whole sequence at once (upstream behaviour).
* a request id → incrementally under that id. A non-streamed answer arrives in one piece, so this
  gives the same text as a whole decode.
* STREAM true without a request id → the chunk alone, with an anchor token in front so it keeps its
  leading space (split characters cannot be repaired without state).
* otherwise → each chunk decoded alone, as upstream does.

Nothing marks a stream's last chunk, so states live in a bounded LRU with idle expiry; a character
left incomplete by the very last token of a stream is never emitted (it could only be a replacement
character). Request ids must therefore be unique among recent requests of a streaming pool (the router
sends a fresh id each time): a reused id would continue the old stream's state.

**The state is per process: for streaming the generator renders exactly ONE postprocessing instance**
(``instance_group count: 1``); with several, consecutive chunks of a stream could land on different
instances and be decoded without their context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import triton_python_backend_utils as pb_utils
from model_parameters import ModelParameters, RequestError, load_tokenizer
from streaming_detokenizer import IncrementalDetokenizer, StreamStates, decode_keeping_leading_space


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = ModelParameters.from_args(args)
        self._tokenizer = load_tokenizer(parameters.path("tokenizer_dir"), parameters.model_name)
        self._skip_special_tokens = parameters.flag("skip_special_tokens", True)
        self._pool_streams = parameters.flag("streaming", True)
        self._streams = StreamStates(
            max_streams=parameters.integer("stream_state_capacity", 4096, minimum=1),
            idle_seconds=parameters.number("stream_state_idle_seconds", 600.0, minimum=0.001),
        )
        self._anchor_ids = self._tokenizer.encode("a", add_special_tokens=False)
        self._logger = pb_utils.Logger

    def _decode(self, sequences: Sequence[Sequence[int]]) -> list[str]:
        return self._tokenizer.batch_decode(
            [list(sequence) for sequence in sequences], skip_special_tokens=self._skip_special_tokens
        )

    def execute(self, requests):
        responses = []
        # Requests of one execute are handled in arrival order, so the chunks of a stream stay in order.
        for request in requests:
            try:
                texts = self._postprocess(request)
                output = pb_utils.Tensor("OUTPUT", np.array(texts, dtype=object))
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            except RequestError as error:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
            except Exception as error:  # noqa: BLE001  (a bug here must fail this request, not the model instance)
                self._logger.log_error(f"postprocessing failed: {error!r}")
                message = f"postprocessing failed: {type(error).__name__}: {error}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def _postprocess(self, request) -> list[bytes]:
        tokens_tensor = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH")
        lengths_tensor = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH")
        if tokens_tensor is None or lengths_tensor is None:
            raise RequestError("TOKENS_BATCH and SEQUENCE_LENGTH are required")
        tokens = tokens_tensor.as_numpy()
        lengths = lengths_tensor.as_numpy()
        if tokens.ndim == 2:  # one beam sent without its beam axis
            tokens = tokens[:, np.newaxis, :]
        lengths = lengths.reshape(tokens.shape[0], -1)
        request_id = request.request_id() if self._pool_streams else ""
        stream_tensor = pb_utils.get_input_tensor_by_name(request, "STREAM")
        stream_flag = (
            None if stream_tensor is None else bool(np.asarray(stream_tensor.as_numpy()).reshape(-1)[0])
        )
        if not self._pool_streams:
            stream_flag = False

        texts: list[str] = []
        for row in range(tokens.shape[0]):
            beams = [tokens[row, beam, : int(lengths[row, beam])].tolist() for beam in range(tokens.shape[1])]
            if stream_flag is False or (not request_id and not stream_flag):
                texts += self._decode(beams)
            elif request_id:
                texts += [
                    self._streams.get_or_create((request_id, row, beam), self._new_detokenizer).push(chunk)
                    for beam, chunk in enumerate(beams)
                ]
            else:
                texts += [decode_keeping_leading_space(self._decode, chunk, self._anchor_ids) for chunk in beams]
        return [text.encode("utf-8") for text in texts]

    def _new_detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self._decode)
