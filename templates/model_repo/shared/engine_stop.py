"""Stop a running engine request by id: the ``stop`` input of the TensorRT-LLM backend.

A second request with the same request id and ``stop`` = true ends the first one; the TensorRT-LLM
backend and the reference engine both honour it. Used by our BLS models when their client goes away
(Triton's python backend before 24.12 cannot cancel a stream it started).
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

__all__ = ["stop_engine_request"]


def stop_engine_request(engine: str, request_id: str) -> None:
    stop = pb_utils.InferenceRequest(
        model_name=engine,
        inputs=[
            pb_utils.Tensor("input_ids", np.zeros((1, 1), dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.ones((1, 1), dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.ones((1, 1), dtype=np.int32)),
            pb_utils.Tensor("stop", np.ones((1, 1), dtype=bool)),
        ],
        requested_output_names=["output_ids"],
        request_id=request_id,
    )
    for response in stop.exec(decoupled=True):
        if response.has_error():
            pb_utils.Logger.log_warn(f"stopping {request_id} on {engine}: {response.error().message()}")
