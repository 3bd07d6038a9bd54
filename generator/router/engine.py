"""The engine-direct data path (issue 14): the router speaks the ``tensorrt_llm`` model's own tensors.

Text never reaches Triton. The router applies the chat template and tokenizes (once: the same ids
serve the length check, prefix-aware routing and the usage count), sends the engine model
``input_ids``/``input_lengths``/``request_output_len``, the sampling inputs, ``end_id``/``pad_id``,
``stop_words_list`` built from the stop strings and ``exclude_input_in_output`` = true, and turns
the ``output_ids`` that come back into text itself (:func:`detokenized`). No Python model sits on
Triton's hot path, which is what caps the BLS and ensemble paths per token (Dynamo and vLLM's
servers do the same: tokenize in the front door, hand the engine ids).

Tensor names and shapes are the backend's (``generator/contract/catalog/trtllm-1.x.yaml``,
``tensorrt_llm`` inputs; source ``triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/
config.pbtxt`` in https://github.com/NVIDIA/TensorRT-LLM). The request's inputs are built so the
engine sees exactly what the preprocessing model would have given it (same ids, same end/pad ids,
same stop-word layout), so a seed gives the same tokens on every path.

* ``stop_words_list`` is ``[2, L]``: the concatenated ids of every word, then each word's end
  offset, padded with -1 (upstream preprocessing's ``to_word_list_format``). It is sent flat
  (``2 × L`` numbers); Triton's generate endpoint and our gRPC client give it the declared shape.
  The engine keeps the stop word in its output, and a stop string need not fall on token
  boundaries, so the router's StopTrimmer still cuts the text (``stops.py``).
* Token counts are the router's own (prompt ids sent, output ids received): no
  ``return_num_*_tokens`` tensors ride on every response.
* Cancellation: leaving the response stream closes the upstream connection (HTTP) or cancels the
  gRPC stream; Triton then cancels the request and the TensorRT-LLM backend drops it from the
  executor at its next ``cancellation_check_period_ms`` (``model_instance_state.cc``, which polls
  ``TRITONBACKEND_ResponseFactoryIsCancelled``:
  https://github.com/NVIDIA/TensorRT-LLM/blob/0c8de69a1ca6213eebb20a51873890ff128666c2/triton_backend/inflight_batcher_llm/src/model_instance_state.cc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from generator.router.config import ModelRoute
from generator.router.protocol import OpenAIRequest
from generator.router.tokens import ModelTokenizer
from generator.router.upstream import Response

__all__ = ["detokenized", "engine_inputs", "renamed", "stop_words_list", "triton_sampling_inputs"]


def triton_sampling_inputs(route: ModelRoute, *, engine: bool) -> dict[str, str]:
    """OpenAI sampling name → the input of the ``tensorrt_llm`` model (``engine``) or of our
    ensemble/BLS that takes it, in the release's naming (``seed``/``min_tokens`` or
    ``random_seed``/``min_length``)."""
    return {
        "temperature": "temperature",
        "top_p": "runtime_top_p" if engine else "top_p",
        "top_k": "runtime_top_k" if engine else "top_k",
        "seed": route.seed_input,
        "min_tokens": "min_tokens" if route.seed_input == "seed" else "min_length",
        "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty",
    }


def renamed(settings: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``settings`` under the names a model takes them by; a setting it has no input for is left out
    (a protocol refuses such a request before it builds inputs)."""
    return {names[name]: value for name, value in settings.items() if name in names}


def stop_words_list(tokenizer: ModelTokenizer, stops: Sequence[str]) -> list[int] | None:
    """The stop strings as the engine's flat ``[2, L]`` word list, or None when there are none."""
    ids: list[int] = []
    offsets: list[int] = []
    for stop in stops:
        word = tokenizer.word_ids(stop)
        if word:
            ids.extend(word)
            offsets.append(len(ids))
    if not ids:
        return None
    return ids + offsets + [-1] * (len(ids) - len(offsets))


def engine_inputs(
    route: ModelRoute,
    request: OpenAIRequest,
    max_tokens: int,
    input_ids: list[int],
    tokenizer: ModelTokenizer,
    *,
    stream: bool,
) -> dict[str, Any]:
    """Inputs of the ``tensorrt_llm`` model (and its context/generation copies) for one request."""
    inputs: dict[str, Any] = {
        "input_ids": input_ids,
        "input_lengths": len(input_ids),
        "request_output_len": max_tokens,
        "streaming": stream,
        "exclude_input_in_output": True,
    }
    if tokenizer.end_id is not None:
        inputs["end_id"] = tokenizer.end_id
    if tokenizer.pad_id is not None:
        inputs["pad_id"] = tokenizer.pad_id
    inputs.update(renamed(request.sampling(), triton_sampling_inputs(route, engine=True)))
    words = stop_words_list(tokenizer, request.stop)
    if words is not None:
        inputs["stop_words_list"] = words
    return inputs


async def detokenized(
    responses: AsyncIterator[Response], tokenizer: ModelTokenizer, prompt_tokens: int
) -> AsyncIterator[Response]:
    """Engine responses (``output_ids``) → responses carrying the new exact text, with the prompt
    and output token counts so far. A response whose tokens end inside a character carries ""
    (the character comes with the token that completes it)."""
    decoder = tokenizer.stream_decoder()
    generated = 0
    async with aclosing(responses) as upstream:
        async for response in upstream:
            ids = response.output_ids
            if ids:
                generated += len(ids)
                response.text = decoder.step(ids)
            response.num_input_tokens = prompt_tokens
            response.num_output_tokens = generated
            yield response
    tail = decoder.finish()  # the stream ended inside a character: what a whole decode gives
    if tail:
        yield Response(text=tail, num_input_tokens=prompt_tokens, num_output_tokens=generated)
