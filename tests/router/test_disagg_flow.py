"""The disaggregated flow (generator/router/disagg.py) for each tensor contract, over a scripted
pair of pools: what the context call asks for, what is handed over to the generation call, and what
the client's stream is made of. The same flow on real tritonservers: test_triton.py (ensemble),
test_engine_direct.py and test_quickstart.py (engine); the LLM-API flow with a stand-in dispatcher
also in tests/render/test_disaggregation.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from generator.router.admission import Admission
from generator.router.config import Endpoint, Protocol
from generator.router.disagg import DisaggregatedFlow
from generator.router.dispatch import Dispatcher, PoolTarget
from generator.router.metrics import RouterMetrics
from generator.router.policies import Hints, LeastInflight
from generator.router.protocols import upstream_protocol
from generator.router.replicas import PoolState
from generator.router.upstream import GenerateCall, Response
from generator.spec.router import RouterSettings
from tests.support.router import replicas

# What each contract's prefill and decode models answer for "Once upon a time": the context answer
# carries the first token and the hand-over; the generation stream starts with that token again
# (ensemble and engine) or sends its whole text so far each time (LLM-API).
ANSWERS: dict[str, tuple[list[Response], list[Response]]] = {
    "ensemble": (
        [Response(text="Once", context_phase_params=b"kv")],
        [Response(text="Once"), Response(text=" upon"), Response(text=" a time")],
    ),
    "engine": (
        [Response(output_ids=[7], context_phase_params=b"kv")],
        [Response(output_ids=[7]), Response(output_ids=[8]), Response(output_ids=[9, 10])],
    ),
    "llmapi": (
        [Response(text="Once", disaggregated_params=b'{"ctx": 1}', finish_reason="length")],
        [Response(text="Once"), Response(text="Once upon"), Response(text="Once upon a time")],
    ),
}


class PhasedUpstream:
    """The prefill and decode models of one contract; records every call."""

    def __init__(self, protocol: str) -> None:
        self.context, self.generation = ANSWERS[protocol]
        self.calls: list[GenerateCall] = []

    async def generate(self, endpoint: Endpoint, call: GenerateCall) -> AsyncIterator[Response]:
        self.calls.append(call)
        phase = call.parameters["request_type"]
        for response in self.context if phase == "context_only" else self.generation:
            yield Response(**vars(response))  # a fresh copy: the flow may trim what it hands out

    async def ready(self, endpoint: Endpoint, timeout: float) -> bool:
        return True

    async def metrics_text(self, endpoint: Endpoint, timeout: float) -> str:
        return ""


def run_flow(
    protocol: Protocol, streaming: bool, finished: bool = False, context_finish: str | None = None
) -> tuple[list[Response], list[GenerateCall]]:
    async def scenario() -> list[Response]:
        return [r async for r in flow.run("m", call, Hints(), streaming, lambda context: finished)]

    settings = RouterSettings()
    prefill, decode = PoolState("p", "prefill", replicas(1, "p")), PoolState("d", "decode", replicas(1, "d"))
    upstream = PhasedUpstream(protocol)
    if context_finish is not None:
        upstream.context = [Response(**{**vars(upstream.context[0]), "finish_reason": context_finish})]
    dispatcher = Dispatcher(
        upstream, Admission(settings), settings, RouterMetrics(lambda: [prefill, decode]), lambda: 0
    )
    flow = DisaggregatedFlow(
        dispatcher,
        dispatcher.metrics,
        PoolTarget(prefill, LeastInflight()),
        "m_prefill",
        PoolTarget(decode, LeastInflight()),
        "m_decode",
        5.0,
        upstream_protocol(protocol),
    )
    stream_name = "stream" if protocol == "ensemble" else "streaming"
    call = GenerateCall("", {"prompt": "tell me", stream_name: streaming}, "id")
    return asyncio.run(scenario()), upstream.calls


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("protocol", ["ensemble", "engine", "llmapi"])
def test_the_hand_over_and_the_pieces_for_each_contract(protocol: Protocol, streaming: bool) -> None:
    responses, calls = run_flow(protocol, streaming)
    context, generation = calls
    stream_name = "stream" if protocol == "ensemble" else "streaming"
    hand_over = "disaggregated_params" if protocol == "llmapi" else "context_phase_params"
    # The context call: the prefill model, never streaming, its own request id.
    assert (context.model, context.request_id, context.inputs[stream_name]) == ("m_prefill", "id-ctx", False)
    assert context.parameters == {"request_type": "context_only"}
    # The generation call: the decode model, the client's streaming, the context's hand-over.
    assert (generation.model, generation.request_id) == ("m_decode", "id-gen")
    assert generation.inputs[stream_name] is streaming
    assert generation.inputs[hand_over] == getattr(ANSWERS[protocol][0][0], hand_over)
    # What the client gets: every piece once. Streaming, the prefill's first token goes out at
    # once and the decode's repeat of it is dropped; whole, the decode's answer is all of it.
    if protocol == "engine":
        assert [r.output_ids for r in responses if r.output_ids] == [[7], [8], [9, 10]]
    else:
        pieces: list[Any] = [r.text for r in responses]
        assert "".join(pieces) == "Once upon a time"
        assert pieces[:2] == (["Once", ""] if streaming else ["Once", " upon"])


@pytest.mark.parametrize(
    ("protocol", "finished", "context_finish"),
    [("engine", True, None), ("ensemble", True, None), ("llmapi", False, "stop")],
)
def test_a_prefill_that_ended_the_request_answers_alone(
    protocol: Protocol, finished: bool, context_finish: str | None
) -> None:
    """The router's check (one token asked for, end of sequence, a stop string), or the LLM-API
    context phase's own finish reason: no decode work is started."""
    responses, calls = run_flow(protocol, True, finished, context_finish)
    assert [c.parameters["request_type"] for c in calls] == ["context_only"]
    assert len(responses) == 1 and responses[0].finish_reason == context_finish
    assert (responses[0].text, responses[0].output_ids) == (
        ("", [7]) if protocol == "engine" else ("Once", None)
    )
