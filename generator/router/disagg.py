"""The disaggregated flow across two Triton pools: prefill (``context_only``) then decode
(``generation_only``), the same hand-over the TensorRT-LLM disaggregated BLS does inside one server
(``context_phase_params`` from the context response becomes an input of the generation request),
re-done in the router because the two phases live on different pools.

* The prefill phase has its own deadline (``prefill_timeout_s``) and may be retried on another
  prefill replica on transport errors: nothing has reached the client yet.
* A streaming client gets the prefill's first token at once (the point of a fast prefill pool);
  the decode stream repeats that token, so its first piece is trimmed by that text.
* Both pools must have a ready replica before the prefill starts (else 503 and no work).
* If the prefill already finished the request (one token asked for, end-of-sequence, or a stop
  string), the answer comes straight from it and no decode work is started.
* The decode phase is not retried once a streaming client has its first token. Any failure ends in
  an ApiError; closing the generator cancels whichever phase is running upstream.

Three tensor contracts (``protocol``, whose class answers the flow's questions: the streaming
input's name, the hand-over's name, how the context answer's responses add up, whether it ended
the request itself, whether the generation stream replays its token ids): ``engine`` (the context
and generation ``tensorrt_llm`` models themselves, token ids in and out: the context answer's ``output_ids`` are the first token,
which the generation stream sends again first and which is dropped there; the hand-over is
``context_phase_params``), ``ensemble`` (our prefill ensemble and decode BLS on the
engine or reference engine; the hand-over is ``context_phase_params``) and ``llmapi``
(tritonstack's LLM-API model in both pools; the hand-over is ``disaggregated_params``, the
serialized ``DisaggregatedParams`` of the context phase, as trtllm-serve's disaggregated
orchestrator passes ``disaggregated_params`` from the context answer into the generation request:
https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/serve/openai_disagg_service.py).
The LLM-API model sends its whole text so far in every response; the flow hands out pieces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

from generator.router.dispatch import Dispatcher, PoolTarget
from generator.router.metrics import RouterMetrics
from generator.router.policies import Hints
from generator.router.protocol import ApiError
from generator.router.protocols import UpstreamProtocol
from generator.router.upstream import GenerateCall, Response

__all__ = ["DisaggregatedFlow"]


@dataclass(frozen=True)
class DisaggregatedFlow:
    dispatcher: Dispatcher
    metrics: RouterMetrics
    prefill: PoolTarget
    prefill_model: str
    decode: PoolTarget
    decode_model: str
    prefill_timeout_s: float
    protocol: UpstreamProtocol
    clock: Callable[[], float] = time.monotonic

    def _check_ready(self) -> None:
        """Both phases need a ready replica before any work starts: a prefill whose decode cannot run
        would cost a context phase and answer 200 with one token and an error event."""
        for phase, target in (("prefill", self.prefill), ("decode", self.decode)):
            if target.pool.ready_count == 0:
                raise ApiError(
                    503,
                    f"no ready replica in the {phase} pool {target.pool.name!r}; retry later",
                    "server_error",
                    retry_after=self.dispatcher.settings.retry_after_s,
                )

    async def run(
        self,
        model: str,
        call: GenerateCall,
        hints: Hints,
        streaming: bool,
        finished: Callable[[Response], bool],
    ) -> AsyncIterator[Response]:
        self._check_ready()
        started = self.clock()
        protocol = self.protocol
        context_call = replace(
            call,
            model=self.prefill_model,
            request_id=f"{call.request_id}-ctx",
            inputs={**call.inputs, protocol.streaming_input: False},
            parameters={**call.parameters, "request_type": "context_only"},
        )
        context: Response | None = None
        try:
            async with (
                asyncio.timeout(self.prefill_timeout_s),
                aclosing(self.dispatcher.stream(self.prefill, context_call, hints)) as responses,
            ):
                async for response in responses:
                    context = protocol.context_answer(context, response)
        except TimeoutError:
            raise ApiError(
                504, f"prefill did not finish within {self.prefill_timeout_s}s", "server_error"
            ) from None
        self.metrics.phase.labels(model, "prefill").observe(self.clock() - started)
        hand_over = None if context is None else getattr(context, protocol.hand_over)
        if context is None or hand_over is None:
            raise ApiError(502, f"the prefill pool returned no {protocol.hand_over}", "server_error")
        ended = protocol.context_ended(context)
        if ended or finished(context):
            self.metrics.early_finish.labels(model).inc()
            yield Response(
                text=context.text,
                output_ids=context.output_ids,
                num_input_tokens=context.num_input_tokens,
                num_output_tokens=context.num_output_tokens,
                finish_reason=context.finish_reason if ended else None,
            )
            return
        first_text = ""
        replayed: list[int] = []
        if streaming:
            first_text = context.text
            replayed = list(context.output_ids or []) if protocol.replays_context_ids else []
            yield Response(text=first_text, output_ids=replayed or None)
        generation_call = replace(
            call,
            model=self.decode_model,
            request_id=f"{call.request_id}-gen",
            inputs={**call.inputs, protocol.hand_over: hand_over},
            parameters={**call.parameters, "request_type": "generation_only"},
        )
        decode_started = self.clock()
        first = True
        decode = protocol.pieces(
            self.dispatcher.stream(self.decode, generation_call, hints, retries=0 if streaming else None)
        )
        async with aclosing(decode) as responses:
            async for response in responses:
                if first:
                    self.metrics.phase.labels(model, "decode_first").observe(self.clock() - decode_started)
                    first = False
                    if first_text and response.text.startswith(first_text):
                        response.text = response.text[len(first_text) :]
                if replayed and response.output_ids:
                    # The generation phase streams the context phase's token(s) again first.
                    ids, replayed = response.output_ids, []
                    if ids[: len(context.output_ids or [])] == context.output_ids:
                        response.output_ids = ids[len(context.output_ids or []) :]
                yield response
