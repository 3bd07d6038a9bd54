"""tritonstack's disaggregated-serving BLS: one server, context and generation as two engine copies.

It has the token-level interface of ``tensorrt_llm`` (same inputs and outputs), so the ensemble and
our text BLS call it in place of the engine. Each request runs in two phases:

1. the context copy with request parameter ``request_type: context_only`` (one response: the first
   token and the opaque ``context_phase_params``);
2. unless that already finished the request (``request_output_len`` of 1), the generation copy with
   ``request_type: generation_only`` and ``context_phase_params`` added to the original inputs; its
   responses stream back unchanged.

Requests run on a thread pool, so streams interleave instead of waiting for each other. A client
that cancels stops the generation phase (``stop`` request with the same id, which the TensorRT-LLM
backend and the reference engine honour); a ``stop`` request sent to this model is passed on. Every
request ends with the final flag, also on errors.

Parameters: ``context_model_name``, ``generation_model_name``, ``max_concurrent_requests`` (64).
Only numpy, the standard library and triton_python_backend_utils are imported.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils
from engine_stop import stop_engine_request
from model_parameters import bls_request_parameters

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class PhaseError(Exception):
    """A phase failed; the message goes back to the client."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self._name = config["name"]
        try:
            self._context = parameters["context_model_name"]
            self._generation = parameters["generation_model_name"]
        except KeyError as missing:
            raise ValueError(f"model '{self._name}': parameter {missing} is required in config.pbtxt") from None
        self._decoupled = bool((config.get("model_transaction_policy") or {}).get("decoupled", False))
        workers = int(parameters.get("max_concurrent_requests") or 64)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="disaggregated")
        self._logger = pb_utils.Logger

    def execute(self, requests: list) -> list | None:
        if self._decoupled:
            for request in requests:
                sender = request.get_response_sender()
                self._pool.submit(self._serve_streaming, request, sender)
            return None
        return [self._serve_once(request) for request in requests]

    def finalize(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- decoupled ---------------------------------------------------------------------------------

    def _serve_streaming(self, request, sender) -> None:
        request_id = _request_id(request)
        try:
            if _flag(request, "stop"):
                self._stop_generation(request_id)
                sender.send(flags=FINAL)
                return
            context = self._context_phase(request, request_id)
            if _requested_len(request) <= 1:
                sender.send(_forward(context, request), flags=FINAL)
                return
            responses = self._generation_request(request, context, request_id).exec(decoupled=True)
            for response in responses:
                if response.has_error():
                    raise PhaseError(f"{self._generation}: {response.error().message()}")
                if sender.is_cancelled():
                    self._stop_generation(request_id)
                    break
                if response.output_tensors():
                    sender.send(_forward(response, request))
            sender.send(flags=FINAL)
        except PhaseError as error:
            sender.send(_error(str(error)), flags=FINAL)
        except Exception as error:  # noqa: BLE001 — any failure must still end the client's stream
            self._logger.log_error(f"{self._name}: {error!r}")
            sender.send(_error(f"{self._name}: {error}"), flags=FINAL)

    # -- not decoupled -----------------------------------------------------------------------------

    def _serve_once(self, request):
        request_id = _request_id(request)
        try:
            if _flag(request, "stop"):
                self._stop_generation(request_id)
                return pb_utils.InferenceResponse(output_tensors=[])
            context = self._context_phase(request, request_id)
            if _requested_len(request) <= 1:
                return _forward(context, request)
            response = self._generation_request(request, context, request_id).exec()
            if response.has_error():
                raise PhaseError(f"{self._generation}: {response.error().message()}")
            return _forward(response, request)
        except PhaseError as error:
            return _error(str(error))

    # -- the two phases ----------------------------------------------------------------------------

    def _context_phase(self, request, request_id: str):
        inputs = _engine_inputs(request, skip=("context_phase_params", "streaming"))
        phase = pb_utils.InferenceRequest(
            model_name=self._context,
            inputs=inputs,
            requested_output_names=_unique(["context_phase_params", *request.requested_output_names()]),
            request_id=request_id,
            parameters={**bls_request_parameters(request.parameters()), "request_type": "context_only"},
        )
        response = phase.exec()
        if response.has_error():
            raise PhaseError(f"{self._context}: {response.error().message()}")
        if pb_utils.get_output_tensor_by_name(response, "context_phase_params") is None:
            raise PhaseError(f"{self._context}: the context phase returned no context_phase_params")
        return response

    def _generation_request(self, request, context, request_id: str):
        params = pb_utils.get_output_tensor_by_name(context, "context_phase_params").as_numpy()
        inputs = _engine_inputs(request, skip=("context_phase_params",))
        inputs.append(pb_utils.Tensor("context_phase_params", params.reshape(1, -1).astype(np.uint8)))
        return pb_utils.InferenceRequest(
            model_name=self._generation,
            inputs=inputs,
            requested_output_names=list(request.requested_output_names()),
            request_id=request_id,
            parameters={**bls_request_parameters(request.parameters()), "request_type": "generation_only"},
        )

    def _stop_generation(self, request_id: str) -> None:
        stop_engine_request(self._generation, request_id)


def _engine_inputs(request, skip: tuple[str, ...]) -> list:
    """The request's inputs, ready for an engine copy. Per-request scalars are declared with
    ``reshape: { shape: [ ] }``, so they arrive here as [batch]; a BLS request must send the declared
    shape [batch, 1] again."""
    inputs = []
    for tensor in request.inputs():
        if tensor.name() in skip:
            continue
        value = tensor.as_numpy()
        inputs.append(pb_utils.Tensor(tensor.name(), value.reshape(-1, 1)) if value.ndim == 1 else tensor)
    return inputs


def _forward(response, request):
    """The outputs the client asked for, from a phase's response."""
    wanted = set(request.requested_output_names())
    tensors = [t for t in response.output_tensors() if not wanted or t.name() in wanted]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _error(message: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def _flag(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(tensor.as_numpy().any())


def _requested_len(request) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, "request_output_len")
    return int(tensor.as_numpy().reshape(-1)[0]) if tensor is not None else 0


def _request_id(request) -> str:
    # Both phases and a later stop request share one id; make one when the client sent none.
    return request.request_id() or f"tritonstack-disagg-{uuid.uuid4().hex}"


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
