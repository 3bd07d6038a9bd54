"""tritonstack's LLM-API model for a prefill or a decode pool: ``tensorrt_llm.LLM`` plus the two
request types of disaggregated serving. Runs only where ``tensorrt_llm`` is installed (the
trtllm-python-py3 container); nothing here runs on a CPU-only machine.

Why our own model: the LLM-API Triton model that ships with TensorRT-LLM
(triton_backend/all_models/llmapi/tensorrt_llm/1/model.py,
https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/all_models/llmapi/tensorrt_llm/1/model.py)
calls ``generate_async(prompt, SamplingParams(...), streaming)`` and has no way to pass
``disaggregated_params``, so it can serve aggregated pools only.

Tensor contract: the LLM-API model's inputs and outputs (text_input, streaming, sampling_param_*,
return_finish_reason -> text_output with the whole text so far, finish_reason), plus

* the Triton request parameter ``request_type``: ``context_only`` (prefill pool) or
  ``generation_only`` (decode pool); absent means ``context_and_generation``;
* output ``disaggregated_params`` (UINT8, UTF-8 JSON) on a context-only answer: the fields of
  ``tensorrt_llm.disaggregated_params.DisaggregatedParams`` the context phase returned, bytes as
  base64 (https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/disaggregated_params.py);
* input ``disaggregated_params`` on a generation-only request: those bytes, unchanged.

The KV cache itself moves between the pools through the cache transceiver configured in
``model.yaml`` (``cache_transceiver_config``: UCX or NIXL), the way ``trtllm-serve`` disaggregated
workers do; ``opaque_state`` tells the decode side where to fetch it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
import yaml

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.yaml")
REQUEST_TYPES = ("context_only", "generation_only", "context_and_generation")
# LLM-API input name -> SamplingParams argument.
SAMPLING_INPUTS = {
    "sampling_param_best_of": "best_of",
    "sampling_param_temperature": "temperature",
    "sampling_param_top_k": "top_k",
    "sampling_param_top_p": "top_p",
    "sampling_param_frequency_penalty": "frequency_penalty",
    "sampling_param_presence_penalty": "presence_penalty",
    "sampling_param_max_tokens": "max_tokens",
    "sampling_param_seed": "seed",
    "sampling_param_exclude_input_from_output": "exclude_input_from_output",
}


def encode_params(params) -> bytes:
    """DisaggregatedParams -> UTF-8 JSON: every JSON-representable field, bytes as {"base64": ...}.
    Fields that are not data (logits tensors, multimodal handles) stay behind; their absence is what
    the decode side sees when they were unset."""
    document = {}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, bytes):
            document[field.name] = {"base64": base64.b64encode(value).decode("ascii")}
        elif isinstance(value, int) or value is None or isinstance(value, str):
            document[field.name] = int(value) if isinstance(value, int) and not isinstance(value, bool) else value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            document[field.name] = [int(v) for v in value]
    return json.dumps(document, sort_keys=True).encode("utf-8")


def decode_params(raw: bytes, params_class):
    """The reverse of :func:`encode_params`, for a generation-only request."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"disaggregated_params is not the JSON a context_only request returned: {exc}") from None
    known = {field.name for field in dataclasses.fields(params_class)}
    values = {}
    for name, value in document.items():
        if name not in known:
            continue  # written by another TensorRT-LLM release; this one has no such field
        if isinstance(value, dict) and "base64" in value:
            value = base64.b64decode(value["base64"])
        values[name] = value
    values["request_type"] = "generation_only"
    return params_class(**values)


def _scalar(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)
    return value[0] if value.size else None


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


class TritonPythonModel:
    def initialize(self, args):
        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.disaggregated_params import DisaggregatedParams
        from tensorrt_llm.llmapi.llm_utils import update_llm_args_with_extra_dict

        self._sampling_params, self._disaggregated_params = SamplingParams, DisaggregatedParams
        with open(os.environ.get("LLM_CONFIG_PATH", CONFIG_FILE), encoding="utf-8") as f:
            config = yaml.safe_load(f)
        triton_config = config.pop("triton_config")
        self.decoupled = bool(triton_config["decoupled"])
        self.cancellation_period_s = int(triton_config.get("cancellation_check_period_ms", 100)) / 1000
        self.llm = LLM(**update_llm_args_with_extra_dict({}, config))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def execute(self, requests):
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._serve(request), self.loop)
        return None

    async def _serve(self, request):
        sender = request.get_response_sender()
        try:
            await self._generate(request, sender)
        except Exception as exc:  # the caller gets the reason, as an error response
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"Error generating request: {exc}")),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def _request_type(self, request):
        parameters = json.loads(request.parameters() or "{}")
        request_type = str(parameters.get("request_type", "context_and_generation"))
        if request_type not in REQUEST_TYPES:
            raise ValueError(f"request_type {request_type!r} is not one of {', '.join(REQUEST_TYPES)}")
        return request_type

    async def _generate(self, request, sender):
        text = _scalar(request, "text_input")
        if text is None:
            raise ValueError("text_input is missing from the request")
        request_type = self._request_type(request)
        # A context-only request answers once, with the first token and the hand-over state.
        streaming = bool(_scalar(request, "streaming")) and request_type != "context_only"
        if streaming and not self.decoupled:
            raise ValueError("Streaming is only supported in decoupled mode.")
        sampling = {}
        for input_name, argument in SAMPLING_INPUTS.items():
            value = _scalar(request, input_name)
            if value is not None:
                sampling[argument] = _plain(value)
        stop = pb_utils.get_input_tensor_by_name(request, "sampling_param_stop")
        if stop is not None:
            sampling["stop"] = [_plain(s) for s in stop.as_numpy().reshape(-1)]
        params = None
        if request_type == "context_only":
            params = self._disaggregated_params(request_type="context_only")
        elif request_type == "generation_only":
            raw = pb_utils.get_input_tensor_by_name(request, "disaggregated_params")
            if raw is None:
                raise ValueError(
                    "a generation_only request needs the disaggregated_params input: pass on the bytes the "
                    "context_only request returned"
                )
            params = decode_params(raw.as_numpy().astype(np.uint8).tobytes(), self._disaggregated_params)
        want_reason = bool(_scalar(request, "return_finish_reason"))
        results = self.llm.generate_async(
            _plain(text), self._sampling_params(**sampling), streaming=streaming, disaggregated_params=params
        )
        last = None
        async for output in results:
            if sender.is_cancelled():
                results.abort()
                break
            last = output
            if streaming:
                sender.send(self._response(output, want_reason, request_type))
        if last is not None and not streaming and not sender.is_cancelled():
            sender.send(self._response(last, want_reason, request_type))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _response(self, output, want_reason, request_type):
        completion = output.outputs[0]
        tensors = [pb_utils.Tensor("text_output", np.array([completion.text.encode("utf-8")], dtype=np.object_))]
        if want_reason:
            tensors.append(pb_utils.Tensor("finish_reason", np.array([str(completion.finish_reason)], dtype=np.object_)))
        if request_type == "context_only":
            if completion.disaggregated_params is None:
                raise ValueError("the context phase returned no disaggregated_params; is cache_transceiver_config set?")
            blob = np.frombuffer(encode_params(completion.disaggregated_params), dtype=np.uint8)
            tensors.append(pb_utils.Tensor("disaggregated_params", blob.copy()))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
