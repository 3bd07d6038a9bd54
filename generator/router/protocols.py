"""The upstream protocols: the tensor contract a route speaks to its Triton model(s).

``routes.yaml``'s ``serving.protocol`` names one of three, and :func:`upstream_protocol` picks its
class once per model when the routes are installed. Each answers the same three questions, so the
app never asks which one it holds (``protocol.py`` is the other side: the OpenAI requests):

* :meth:`UpstreamProtocol.inputs` — the request's inputs for the Triton model;
* :meth:`UpstreamProtocol.pieces` — one pool's answers, each carrying only its new text;
* :meth:`UpstreamProtocol.responses` — the route's answers as text pieces with token counts.

``engine``: the ``tensorrt_llm`` model itself, token ids in and out (``engine.py``). ``ensemble``:
our BLS or the ensembles, text in and text pieces out. ``llmapi``: the LLM-API model, text and
``sampling_param_*`` in, the whole text so far out
(https://github.com/NVIDIA/TensorRT-LLM/tree/main/triton_backend/all_models/llmapi).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any, ClassVar

import orjson

from generator.router.config import ModelRoute, Protocol
from generator.router.engine import detokenized, engine_inputs, renamed, triton_sampling_inputs
from generator.router.protocol import ApiError, OpenAIRequest
from generator.router.tokens import ModelTokenizer
from generator.router.upstream import GenerateCall, Response

__all__ = [
    "EngineProtocol",
    "EnsembleProtocol",
    "LlmApiProtocol",
    "UpstreamProtocol",
    "text_pieces",
    "upstream_protocol",
]


class UpstreamProtocol(ABC):
    """A tensor contract; the base is the text-in, text-pieces-out shape every protocol starts from.
    Each protocol says how a request becomes that contract's inputs (:meth:`inputs`)."""

    name: ClassVar[Protocol]
    # The request's prompt ids are needed to build the inputs (not only for routing or limits).
    needs_token_ids: ClassVar[bool] = False
    # A stream its replica drops midway can go on elsewhere (:meth:`resume` can say how).
    resumable: ClassVar[bool] = False
    # The disaggregated flow (disagg.py): the input that turns streaming on or off, the context
    # answer's output the generation request takes as an input of the same name, and whether the
    # generation stream sends the context answer's token ids again first.
    streaming_input: ClassVar[str] = "streaming"
    hand_over: ClassVar[str] = "context_phase_params"
    replays_context_ids: ClassVar[bool] = False

    @abstractmethod
    def inputs(
        self,
        *,
        model: str,
        route: ModelRoute,
        request: OpenAIRequest,
        max_tokens: int,
        text: str,
        ids: list[int] | None,
        tokenizer: ModelTokenizer,
        stream: bool,
    ) -> dict[str, Any]:
        """Inputs for one request; ``text`` is the prompt, or a chat request's messages through the
        chat template; ``ids`` its token ids when they were computed (always, if ``needs_token_ids``)."""

    def pieces(self, responses: AsyncIterator[Response]) -> AsyncIterator[Response]:
        """One pool's answers with each response carrying only the text it adds."""
        return responses

    def responses(
        self, responses: AsyncIterator[Response], tokenizer: ModelTokenizer, prompt_tokens: Callable[[], int]
    ) -> AsyncIterator[Response]:
        """The route's answers (one pool's pieces, or the disaggregated flow's) as the text pieces
        the client gets."""
        return responses

    def text(self, response: Response, tokenizer: ModelTokenizer) -> str:
        """The text of one answer (the prefill's, to see whether it already ended the request)."""
        return response.text

    def resume(
        self, call: GenerateCall, streamed: list[Response], route: ModelRoute, tokenizer: ModelTokenizer
    ) -> GenerateCall | None:
        """The call that goes on with ``call`` on another replica after ``streamed`` came back and
        its replica dropped it, or None when this contract cannot say (text in, text out: the
        model would need the text so far as a prompt in its own tokenization)."""
        return None

    def context_answer(self, so_far: Response | None, response: Response) -> Response:
        """The context phase's answer with one more of its responses taken in: each carries only
        its new text."""
        return response if so_far is None else _merged(so_far, response)

    def context_ended(self, context: Response) -> bool:
        """Whether the context phase says itself that it ended the request (the router's own check
        of end-of-sequence and stop strings is the flow's ``finished``)."""
        return False


class EngineProtocol(UpstreamProtocol):
    """The ``tensorrt_llm`` model: the router tokenizes, sends ids and detokenizes ``output_ids``."""

    name = "engine"
    needs_token_ids = True
    resumable = True
    replays_context_ids = True

    def inputs(
        self,
        *,
        model: str,
        route: ModelRoute,
        request: OpenAIRequest,
        max_tokens: int,
        text: str,
        ids: list[int] | None,
        tokenizer: ModelTokenizer,
        stream: bool,
    ) -> dict[str, Any]:
        assert ids is not None  # needs_token_ids
        if not ids:
            raise ApiError(400, "the prompt is empty: send some text to continue from", param="prompt")
        return engine_inputs(route, request, max_tokens, ids, tokenizer, stream=stream)

    def responses(
        self, responses: AsyncIterator[Response], tokenizer: ModelTokenizer, prompt_tokens: Callable[[], int]
    ) -> AsyncIterator[Response]:
        # token ids → text, here rather than in a Python model in Triton
        return detokenized(responses, tokenizer, prompt_tokens())

    def text(self, response: Response, tokenizer: ModelTokenizer) -> str:
        return tokenizer.decode(response.output_ids) if response.output_ids else response.text

    def resume(
        self, call: GenerateCall, streamed: list[Response], route: ModelRoute, tokenizer: ModelTokenizer
    ) -> GenerateCall | None:
        # The engine continues a sequence from its ids: the prompt plus what was streamed is the
        # new prompt, and only the tokens still owed are asked for. With greedy decoding the
        # client gets exactly what an uninterrupted stream would have given.
        got = [token for response in streamed for token in response.output_ids or ()]
        inputs = dict(call.inputs)
        left = int(inputs["request_output_len"]) - len(got)
        ids = [*inputs["input_ids"], *got]
        if not got or left <= 0 or len(ids) > route.max_input_len or got[-1] in tokenizer.end_ids:
            return None  # nothing to go on from, nothing owed, or the engine would refuse it
        inputs.update(input_ids=ids, input_lengths=len(ids), request_output_len=left)
        for name in ("min_tokens", "min_length"):  # the release's name for the same floor
            if name in inputs:
                inputs[name] = max(0, int(inputs[name]) - len(got))
        return replace(call, inputs=inputs)


class EnsembleProtocol(UpstreamProtocol):
    """Our BLS or the ensembles: the chat messages go as JSON, preprocessing applies the template."""

    name = "ensemble"
    streaming_input = "stream"

    def inputs(
        self,
        *,
        model: str,
        route: ModelRoute,
        request: OpenAIRequest,
        max_tokens: int,
        text: str,
        ids: list[int] | None,
        tokenizer: ModelTokenizer,
        stream: bool,
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "text_input": request.prompt or "",
            "max_tokens": max_tokens,
            "stream": stream,
        }
        if request.messages is not None:
            inputs["messages"] = orjson.dumps(request.messages).decode()
        inputs.update(renamed(request.sampling(), triton_sampling_inputs(route, engine=False)))
        if request.stop:
            inputs["stop_words"] = list(request.stop)
        if route.token_count_outputs:
            inputs["return_num_input_tokens"] = True
            inputs["return_num_output_tokens"] = True
        return inputs


# OpenAI sampling name → the LLM-API model's input (it has no min_tokens; such requests are refused).
_LLMAPI_SAMPLING_INPUTS = {
    name: f"sampling_param_{name}"
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")
}


class LlmApiProtocol(UpstreamProtocol):
    """The LLM-API model: plain text and ``sampling_param_*`` in, cumulative ``text_output`` out."""

    name = "llmapi"
    hand_over = "disaggregated_params"

    def inputs(
        self,
        *,
        model: str,
        route: ModelRoute,
        request: OpenAIRequest,
        max_tokens: int,
        text: str,
        ids: list[int] | None,
        tokenizer: ModelTokenizer,
        stream: bool,
    ) -> dict[str, Any]:
        if request.min_tokens is not None:
            raise ApiError(
                400,
                f"'min_tokens' is not supported by model {model!r} (its LLM-API model has no such input)",
                param="min_tokens",
            )
        # It takes plain text: the chat template, already applied, is not rendered again.
        plain = tokenizer.plain_text(text) if request.messages is not None else text
        inputs: dict[str, Any] = {
            "text_input": plain,
            "streaming": stream,
            "sampling_param_max_tokens": max_tokens,
            # The model's default is False (the prompt would lead text_output); OpenAI answers exclude it.
            "sampling_param_exclude_input_from_output": True,
            "return_finish_reason": True,
        }
        inputs.update(renamed(request.sampling(), _LLMAPI_SAMPLING_INPUTS))
        if request.stop:
            # Every stop string lets the engine end early; the router's StopTrimmer still cuts the text.
            inputs["sampling_param_stop"] = list(request.stop)
        return inputs

    def pieces(self, responses: AsyncIterator[Response]) -> AsyncIterator[Response]:
        return text_pieces(responses)

    def context_answer(self, so_far: Response | None, response: Response) -> Response:
        # The whole text so far in every response: the last one holds all of it.
        return response if so_far is None else _merged(replace(so_far, text=""), response)

    def context_ended(self, context: Response) -> bool:
        # "length" is what a context-only answer reports when generation goes on.
        return context.finish_reason not in (None, "length", "not_finished")


async def text_pieces(responses: AsyncIterator[Response]) -> AsyncIterator[Response]:
    """The LLM-API model streams its whole text so far in every response (``output.text``, not the
    difference); the rest of the router works with pieces. Text already sent stays sent: a response
    that revises earlier characters (detokenizer) contributes only what lies beyond them."""
    previous = ""
    async with aclosing(responses) as upstream:
        async for response in upstream:
            text = response.text
            response.text = text[len(previous) :]
            if len(text) > len(previous):
                previous = text
            yield response


def _merged(a: Response, b: Response) -> Response:
    """Two responses of one answer as one: the texts joined, every other field the later one's
    where it has one."""
    return Response(
        text=a.text + b.text,
        output_ids=b.output_ids or a.output_ids,
        num_input_tokens=b.num_input_tokens or a.num_input_tokens,
        num_output_tokens=b.num_output_tokens or a.num_output_tokens,
        context_phase_params=b.context_phase_params or a.context_phase_params,
        finish_reason=b.finish_reason or a.finish_reason,
        disaggregated_params=b.disaggregated_params or a.disaggregated_params,
    )


_PROTOCOLS: dict[Protocol, UpstreamProtocol] = {
    p.name: p for p in (EngineProtocol(), EnsembleProtocol(), LlmApiProtocol())
}


def upstream_protocol(name: Protocol) -> UpstreamProtocol:
    """The protocol class for ``routes.yaml``'s ``serving.protocol`` (the schema admits no other name)."""
    return _PROTOCOLS[name]
