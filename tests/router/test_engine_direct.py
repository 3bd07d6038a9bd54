"""The engine-direct data path (issue 14) on real components: the rendered quickstart stack's
tritonservers with the reference engine (which keeps the ``tensorrt_llm`` tensor contract), two
``tritonstack router`` processes over it (the default engine-direct routes, and the same stack with
``router.data_path: bls``), driven by the official openai client.

What must hold: the router's own tokenizing and detokenizing gives the text the BLS gives for the
same seed (chat and completions, aggregated and prefill → decode, streamed and not), multibyte
characters and spaces survive token-by-token delivery, stop strings cut exactly, ``max_tokens``
ends with ``length``, usage counts match, and a client that goes away cancels the engine's request
(the reference engine's ``cancelled`` counter).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes
from generator.router.config import Endpoint
from generator.router.engine import detokenized, stop_words_list
from generator.router.tokens import ModelTokenizer, WindowDecoder, load_tokenizer
from generator.router.upstream import Response
from tests.support.paths import EXAMPLES
from tests.support.router import RunningRouter, engine_counter, start_router
from tests.support.stack import RunningStack

TOKENIZER = EXAMPLES / "tokenizers" / "tiny-chat"
# A passage of the reference engine's corpus (reference_corpus.py) that goes on with "Grüße" and
# "日本": byte-level BPE splits those characters over several tokens.
MULTIBYTE_PROMPT = "Streaming text is harder than it looks. A single token can be half of a character"
MODELS = ["tiny-chat", "tiny-pd"]


# ------------------------------------------------------------------------------- without servers


def _tokenizer() -> ModelTokenizer:
    return ModelTokenizer(load_tokenizer(str(TOKENIZER)), add_special_tokens=True)


async def _one_token_each(ids: list[int]) -> AsyncIterator[Response]:
    for token in ids:
        yield Response(output_ids=[token])


async def _collect(responses: AsyncIterator[Response]) -> list[Response]:
    return [r async for r in responses]


@pytest.mark.parametrize(
    "text",
    ["Grüße aus 日本 🎉", "two  spaces,   three and\ttabs\nnew line", " leading space", "ß", "end 本"],
)
def test_token_by_token_delivery_keeps_every_character_and_space(text: str) -> None:
    tokenizer = _tokenizer()
    ids = tokenizer.word_ids(text)
    out = asyncio.run(_collect(detokenized(_one_token_each(ids), tokenizer, prompt_tokens=3)))
    assert "".join(r.text for r in out) == text
    assert all("\ufffd" not in r.text for r in out)  # no piece carries half a character
    assert (out[-1].num_input_tokens, out[-1].num_output_tokens) == (3, len(ids))
    window = WindowDecoder(tokenizer.decode)  # the decoder for tokenizers without a Rust core
    assert "".join(window.step([i]) for i in ids) + window.finish() == text


def test_a_stream_that_ends_inside_a_character_ends_as_a_whole_decode_does() -> None:
    tokenizer = _tokenizer()
    ids = tokenizer.word_ids("ab 日本")[:-1]  # the last character's final byte never comes
    out = asyncio.run(_collect(detokenized(_one_token_each(ids), tokenizer, prompt_tokens=1)))
    assert "".join(r.text for r in out) == tokenizer.decode(ids)


def test_stop_words_list_is_the_engines_ids_and_offsets_layout() -> None:
    tokenizer = _tokenizer()
    first, second = tokenizer.word_ids(" the"), tokenizer.word_ids("Grüße")
    flat = stop_words_list(tokenizer, [" the", "Grüße"])
    assert flat is not None
    width = len(first) + len(second)
    assert flat[:width] == first + second  # row 0: every word's ids
    assert flat[width:] == [len(first), width] + [-1] * (width - 2)  # row 1: end offsets, then -1
    assert stop_words_list(tokenizer, []) is None


def test_engine_inputs_carry_sampling_penalties_and_the_era_names() -> None:
    from generator.router.config import Aggregated, ModelRoute
    from generator.router.engine import engine_inputs
    from generator.router.protocol import parse_request

    request = parse_request(
        b'{"model": "m", "prompt": "hi", "temperature": 0.5, "top_p": 0.9, "top_k": 4, "seed": 7,'
        b' "presence_penalty": 0.5, "frequency_penalty": -1, "min_tokens": 3, "stop": ["the"], "stream": true}',
        chat=False,
    )
    serving = Aggregated(pool="p", triton_model="m_tensorrt_llm", protocol="engine")
    tokenizer = _tokenizer()
    for seed_input, min_name in (("seed", "min_tokens"), ("random_seed", "min_length")):
        route = ModelRoute(
            tokenizer_dir=str(TOKENIZER),
            max_input_len=8,
            max_output_len=8,
            seed_input=seed_input,
            serving=serving,
        )
        inputs = engine_inputs(route, request, 5, [0, 9, 10], tokenizer, stream=True)
        assert inputs == {
            "input_ids": [0, 9, 10],
            "input_lengths": 3,
            "request_output_len": 5,
            "streaming": True,
            "exclude_input_in_output": True,
            "end_id": tokenizer.end_id,
            "pad_id": tokenizer.pad_id,
            "temperature": 0.5,
            "runtime_top_p": 0.9,
            "runtime_top_k": 4,
            seed_input: 7,
            min_name: 3,
            "presence_penalty": 0.5,
            "frequency_penalty": -1.0,
            "stop_words_list": stop_words_list(tokenizer, ["the"]),
        }


def test_a_dropped_engine_stream_goes_on_from_the_prompt_and_what_was_streamed() -> None:
    from generator.router.config import Aggregated, ModelRoute
    from generator.router.protocols import EngineProtocol, EnsembleProtocol
    from generator.router.upstream import GenerateCall

    tokenizer = _tokenizer()
    route = ModelRoute(
        tokenizer_dir=str(TOKENIZER),
        max_input_len=8,
        max_output_len=8,
        serving=Aggregated(pool="p", triton_model="m_tensorrt_llm", protocol="engine"),
    )

    def resume(inputs: dict[str, Any], *streamed: list[int]) -> GenerateCall | None:
        got = [Response(output_ids=ids) for ids in streamed]
        return EngineProtocol().resume(GenerateCall("m", inputs, "r1"), got, route, tokenizer)

    inputs = {"input_ids": [0, 9, 10], "input_lengths": 3, "request_output_len": 5, "min_tokens": 3}
    rest = resume(inputs, [11], [12, 13])
    assert rest is not None and rest.request_id == "r1"
    assert rest.inputs == {
        "input_ids": [0, 9, 10, 11, 12, 13],
        "input_lengths": 6,
        "request_output_len": 2,
        "min_tokens": 0,
    }
    assert inputs["input_ids"] == [0, 9, 10]  # the first try's inputs are left as they were
    # Nothing owed, past the model's input limit, already ended, or no ids yet: it cannot go on.
    assert resume({**inputs, "request_output_len": 3}, [11, 12, 13]) is None
    assert resume({**inputs, "input_ids": [0] * 6}, [11, 12, 13]) is None
    assert resume(inputs, [11, *tokenizer.end_ids]) is None
    assert resume(inputs) is None
    # Text in, text out: our BLS and the ensembles cannot be continued this way (and the router
    # does not keep their streamed responses for it).
    assert EngineProtocol.resumable and not EnsembleProtocol.resumable
    text = [Response(text="once upon")]
    assert EnsembleProtocol().resume(GenerateCall("m", {}, "r"), text, route, tokenizer) is None


# ------------------------------------------------------------------------------- real servers


def _routes(stack: RunningStack, name: str, data_path: str) -> Path:
    """routes.yaml for the running stack, written beside the rendered one (its tokenizer paths are
    relative to its directory)."""
    spec = stack.stack.model_copy(
        update={"router": stack.stack.router.model_copy(update={"data_path": data_path})}
    )
    path = stack.out_dir / ROUTES_PATH
    path = path.with_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(local_routes(spec, stack.launcher.endpoints(), RenderOptions(EXAMPLES, stack.out_dir)))
    return path


@pytest.fixture(scope="module")
def routers(running_quickstart: RunningStack) -> Iterator[dict[str, RunningRouter]]:
    started: dict[str, RunningRouter] = {}
    try:
        for path in ("engine", "bls"):
            started[path] = start_router(_routes(running_quickstart, f"routes-{path}.yaml", path))
        yield started
    finally:
        for running in started.values():
            running.stop()


def _client(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _answer(router: RunningRouter, chat: bool, stream: bool, **request: Any) -> dict[str, Any]:
    """Text, the streamed pieces, finish reason and usage of one request, whatever its kind."""
    client = _client(router)
    if chat:
        prompt = request.pop("prompt")
        request["messages"] = [{"role": "user", "content": prompt}]
        create = client.chat.completions.create
    else:
        create = client.completions.create
    if not stream:
        done = create(**request)
        choice = done.choices[0]
        text = choice.message.content if chat else choice.text
        return {"text": text, "pieces": [text], "finish": choice.finish_reason, "usage": done.usage}
    chunks = list(create(**request, stream=True, stream_options={"include_usage": True}))
    with_choice = [c for c in chunks if c.choices]
    pieces = [(c.choices[0].delta.content or "") if chat else c.choices[0].text for c in with_choice]
    finish = [c.choices[0].finish_reason for c in with_choice if c.choices[0].finish_reason]
    return {"text": "".join(pieces), "pieces": pieces, "finish": finish[-1], "usage": chunks[-1].usage}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["text"] == b["text"]
    assert a["finish"] == b["finish"]
    assert (a["usage"].prompt_tokens, a["usage"].completion_tokens) == (
        b["usage"].prompt_tokens,
        b["usage"].completion_tokens,
    )


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_text_is_identical_to_the_bls_path_for_the_same_seed(
    routers: dict[str, RunningRouter], model: str, chat: bool, stream: bool
) -> None:
    request = {"model": model, "prompt": MULTIBYTE_PROMPT, "max_tokens": 48, "seed": 11}
    engine = _answer(routers["engine"], chat, stream, **dict(request))
    bls = _answer(routers["bls"], chat, stream, **dict(request))
    _same(engine, bls)
    assert engine["finish"] == "length" and engine["usage"].completion_tokens == 48


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_multibyte_characters_and_spaces_arrive_whole(
    routers: dict[str, RunningRouter], running_quickstart: RunningStack, model: str
) -> None:
    """Streamed pieces are never half a character, and together they are exactly what decoding the
    engine's own ids at once gives (asked of the engine model directly, no router)."""
    answer = _answer(
        routers["engine"], False, True, model=model, prompt=MULTIBYTE_PROMPT, max_tokens=64, temperature=0
    )
    assert "日本" in answer["text"] and "Grüße" in answer["text"]
    assert all("\ufffd" not in piece for piece in answer["pieces"])
    tokenizer = _tokenizer()
    if model == "tiny-chat":  # the aggregated engine model, called as a client of Triton would
        replica = running_quickstart.replicas("chat")[0]
        ids = _prompt_ids(tokenizer, MULTIBYTE_PROMPT)
        body = {
            "input_ids": ids,
            "input_lengths": len(ids),
            "request_output_len": 64,
            "temperature": 0.0,
            "end_id": tokenizer.end_id,
            "pad_id": tokenizer.pad_id,
            "exclude_input_in_output": True,
        }
        reply = httpx.post(
            f"{replica.http_url}/v2/models/tiny-chat_tensorrt_llm/generate", json=body, timeout=60
        )
        assert reply.status_code == 200, reply.text
        assert answer["text"] == tokenizer.decode(reply.json()["output_ids"])


def _prompt_ids(tokenizer: ModelTokenizer, prompt: str) -> list[int]:
    text, special = tokenizer.prompt_text(prompt, None)
    return asyncio.run(tokenizer.encode(text, special))


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_stop_strings_cut_exactly_and_finish_with_stop(
    routers: dict[str, RunningRouter], model: str, stream: bool
) -> None:
    request = {"model": model, "prompt": MULTIBYTE_PROMPT, "max_tokens": 64, "temperature": 0}
    whole = _answer(routers["engine"], False, False, **dict(request))["text"]
    # A stop string that starts mid-word (not on a token boundary) and one made of whole tokens.
    for stop in ("üße", " must"):
        assert stop in whole
        engine = _answer(routers["engine"], False, stream, **request, stop=[stop])
        assert engine["text"] == whole[: whole.index(stop)]
        assert engine["finish"] == "stop"
        _same(engine, _answer(routers["bls"], False, stream, **request, stop=[stop]))


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_usage_counts_the_prompt_and_every_generated_token(
    routers: dict[str, RunningRouter], model: str
) -> None:
    tokenizer = _tokenizer()
    for max_tokens in (1, 2, 17):
        answer = _answer(
            routers["engine"], False, True, model=model, prompt="The quick brown fox", max_tokens=max_tokens
        )
        assert answer["finish"] == "length"
        assert answer["usage"].completion_tokens == max_tokens
        assert answer["usage"].prompt_tokens == len(_prompt_ids(tokenizer, "The quick brown fox"))
        assert answer["usage"].total_tokens == answer["usage"].prompt_tokens + max_tokens


@pytest.mark.triton
@pytest.mark.slow
def test_penalties_and_min_tokens_are_accepted_on_the_engine_path(routers: dict[str, RunningRouter]) -> None:
    answer = _answer(
        routers["engine"],
        True,
        True,
        model="tiny-chat",
        prompt="hello",
        max_tokens=8,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        extra_body={"min_tokens": 8},  # vLLM's extension, as the openai client sends it
    )
    assert answer["usage"].completion_tokens == 8


@pytest.mark.triton
@pytest.mark.slow
def test_a_client_that_goes_away_cancels_the_engine_request(
    routers: dict[str, RunningRouter], running_quickstart: RunningStack
) -> None:
    """tiny-pd decodes at 200 tokens/s, so 500 tokens take long enough for the cancellation to
    arrive first; the generation model of the decode pool counts the request as cancelled."""
    replicas = [
        Endpoint(host=r.host, http=r.http_port, grpc=r.grpc_port, metrics=r.metrics_port)
        for r in running_quickstart.replicas("pd-decode")
    ]

    def count(outcome: str) -> float:
        return sum(engine_counter(e, outcome) for e in replicas)

    def quiet() -> tuple[float, float]:
        deadline, last = time.monotonic() + 30, (-1.0, -1.0)
        while time.monotonic() < deadline:
            now = (count("cancelled"), count("completed"))
            if now == last:
                return now
            last = now
            time.sleep(1.0)
        return last

    cancelled, completed = quiet()
    body = {"model": "tiny-pd", "prompt": "tell me a long story", "max_tokens": 500, "stream": True}
    with httpx.stream("POST", routers["engine"].url + "/v1/completions", json=body, timeout=60) as reply:
        assert reply.status_code == 200
        events = 0
        for line in reply.iter_lines():
            events += line.startswith("data: {")
            if events == 5:
                break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and count("cancelled") < cancelled + 1:
        time.sleep(0.2)
    assert count("cancelled") == cancelled + 1
    time.sleep(0.5)
    assert count("completed") == completed, "the abandoned request must not run to the end"
