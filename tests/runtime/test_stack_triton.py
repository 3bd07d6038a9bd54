"""The rendered quickstart on real tritonservers (CPU build, reference engine).

Text in → text out through the ensemble and the BLS, streaming and not, over HTTP generate /
generate_stream and gRPC stream_infer; the chat path; and the disaggregated pair across two separate
servers giving the same text as one server does alone.
"""

from __future__ import annotations

import json
import os
import queue
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support.paths import EXAMPLES
from tests.support.stack import RunningStack, start_stack

pytestmark = pytest.mark.triton

PROMPT = "Tell me how Triton serves a model."
GREEDY = {"temperature": 0.0, "top_k": 1}


def generate(url: str, model: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/v2/models/{model}/generate", json={**body, **params}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def generate_stream(url: str, model: str, body: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    events = []
    with httpx.stream(
        "POST", f"{url}/v2/models/{model}/generate_stream", json={**body, **params}, timeout=60
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                assert "error" not in event, event
                events.append(event)
    return events


def request(max_tokens: int = 24, **extra: Any) -> dict[str, Any]:
    return {"text_input": PROMPT, "max_tokens": max_tokens, **GREEDY, **extra}


def test_servers_loaded_every_model_strictly(running_quickstart: RunningStack) -> None:
    for replica in running_quickstart.launcher.replicas:
        index = httpx.post(f"{replica.http_url}/v2/repository/index", json={}, timeout=10).json()
        states = {entry["name"]: entry.get("state") for entry in index}
        assert states and set(states.values()) == {"READY"}, states


@pytest.mark.parametrize("model", ["tiny-chat_ensemble", "tiny-chat_bls"])
def test_text_in_text_out(running_quickstart: RunningStack, model: str) -> None:
    url = running_quickstart.url("chat")
    whole = generate(url, model, request())["text_output"]
    assert isinstance(whole, str) and whole.strip()
    streamed = generate_stream(url, model, request(stream=True))
    assert len(streamed) > 1, "a streamed answer arrives in several events"
    assert "".join(e["text_output"] for e in streamed) == whole


def test_same_prompt_same_text_on_both_replicas(running_quickstart: RunningStack) -> None:
    answers = {
        generate(r.http_url, "tiny-chat_ensemble", request(seed=11))["text_output"]
        for r in running_quickstart.replicas("chat")
    }
    assert len(answers) == 1


def test_ensemble_and_bls_agree(running_quickstart: RunningStack) -> None:
    url = running_quickstart.url("chat")
    assert (
        generate(url, "tiny-chat_ensemble", request())["text_output"]
        == generate(url, "tiny-chat_bls", request())["text_output"]
    )


def test_token_counts_are_reported(running_quickstart: RunningStack) -> None:
    body = request(max_tokens=9, return_num_input_tokens=True, return_num_output_tokens=True)
    result = generate(running_quickstart.url("chat"), "tiny-chat_ensemble", body)
    assert result["num_output_tokens"] == 9
    assert result["num_input_tokens"] > 3


def test_chat_path_applies_the_template(running_quickstart: RunningStack) -> None:
    url = running_quickstart.url("chat")
    messages = json.dumps([{"role": "user", "content": PROMPT}])
    chat = generate(url, "tiny-chat_ensemble", request(messages=messages, return_num_input_tokens=True))
    plain = generate(url, "tiny-chat_ensemble", request(return_num_input_tokens=True))
    assert chat["text_output"].strip()
    assert chat["num_input_tokens"] > plain["num_input_tokens"], "the chat template adds role markers"


def test_grpc_stream_infer(running_quickstart: RunningStack) -> None:
    replica = running_quickstart.replicas("chat")[0]
    client = grpcclient.InferenceServerClient(replica.grpc_address)
    responses: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        inputs = [
            _grpc_input("text_input", np.array([[PROMPT.encode()]], dtype=object), "BYTES"),
            _grpc_input("max_tokens", np.array([[12]], dtype=np.int32), "INT32"),
            _grpc_input("stream", np.array([[True]], dtype=bool), "BOOL"),
            _grpc_input("temperature", np.array([[0.0]], dtype=np.float32), "FP32"),
        ]
        client.async_stream_infer(
            "tiny-chat_bls", inputs, request_id="grpc-1", enable_empty_final_response=True
        )
        pieces = []
        while True:
            result, error = responses.get(timeout=60)
            assert error is None, error
            response = result.get_response()
            if (
                response.parameters.get("triton_final_response")
                and response.parameters["triton_final_response"].bool_param
            ):
                break
            text = result.as_numpy("text_output")
            if text is not None:
                pieces.append(b"".join(text.flatten()).decode())
    finally:
        client.stop_stream()
        client.close()
    http = generate(replica.http_url, "tiny-chat_bls", request(max_tokens=12))["text_output"]
    assert "".join(pieces) == http


def _grpc_input(name: str, value: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def test_disaggregated_pair_matches_one_server(running_quickstart: RunningStack) -> None:
    prefill_url = running_quickstart.url("pd-prefill")
    decode_url = running_quickstart.url("pd-decode")
    body = request(max_tokens=20, seed=5)
    context = generate(prefill_url, "tiny-pd_prefill", body, request_type="context_only")
    params = context["context_phase_params"]
    assert isinstance(params, list) and len(params) > 8, "an opaque blob of bytes"
    resumed = generate_stream(
        decode_url,
        "tiny-pd_decode",
        {**body, "stream": True, "context_phase_params": params},
        request_type="generation_only",
    )
    alone = generate(decode_url, "tiny-pd_decode", body)["text_output"]
    assert "".join(e["text_output"] for e in resumed) == alone
    # The first token's text from prefill is where the decode stream starts.
    assert alone.lstrip().startswith(context["text_output"].strip()[:1])


def test_forged_context_is_an_error_not_a_hang(running_quickstart: RunningStack) -> None:
    decode_url = running_quickstart.url("pd-decode")
    response = httpx.post(
        f"{decode_url}/v2/models/tiny-pd_decode/generate",
        json={**request(), "context_phase_params": [1, 2, 3, 4], "request_type": "generation_only"},
        timeout=60,
    )
    assert response.status_code >= 400
    assert "context_phase_params" in response.text or "reference engine" in response.text


def test_stop_removes_the_shared_memory_a_killed_server_left(tmp_path: Path) -> None:
    launcher = start_stack(EXAMPLES / "quickstart.yaml", tmp_path / "build")
    try:
        prefix = launcher.shm_tag + "_"
        assert list(Path("/dev/shm").glob(f"{prefix}*"))  # the python stubs' regions
        victim = launcher.replicas[0]
        assert victim.process is not None
        os.killpg(victim.process.pid, signal.SIGKILL)  # no chance to unlink its regions
        victim.process.wait(timeout=10)
    finally:
        launcher.stop()
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))
