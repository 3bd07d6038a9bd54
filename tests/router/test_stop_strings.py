"""Stop strings end the answer before the stop string, with finish_reason "stop" (OpenAI semantics).

Unit tests of the router's StopTrimmer, then one run through the real quickstart stack (tritonservers,
the generator's BLS and the reference engine) with the official openai client.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes
from generator.router.stops import StopTrimmer
from tests.support.paths import EXAMPLES
from tests.support.router import RunningRouter, start_router
from tests.support.stack import RunningStack


def _feed_all(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    trimmer = StopTrimmer(stops)
    out = [trimmer.feed(p) for p in pieces]
    out.append(trimmer.flush())
    return out, trimmer.stopped


def test_no_stop_strings_pass_text_through_unchanged() -> None:
    out, stopped = _feed_all([], ["Hello", " wor", "ld"])
    assert out == ["Hello", " wor", "ld", ""] and not stopped


def test_no_match_releases_everything_and_holds_back_only_possible_starts() -> None:
    trimmer = StopTrimmer(["END"])
    assert trimmer.feed("the E") == "the "  # "E" could begin "END"
    assert trimmer.feed("Nx") == "ENx"  # "ENx" cannot: released at once
    assert trimmer.feed(" fine EN") == " fine "
    assert trimmer.flush() == "EN" and not trimmer.stopped


def test_stop_split_across_chunks_is_cut_and_ends_the_stream() -> None:
    out, stopped = _feed_all(["</answer>"], ["42 is it</", "ans", "wer> and more", "ignored"])
    assert "".join(out) == "42 is it" and stopped
    assert out[0] == "42 is it"  # "</" held back, never sent


def test_first_of_several_stop_strings_wins() -> None:
    out, stopped = _feed_all(["\n\n", "Q:", "###"], ["a Q", ": b ###", " c\n\nd"])
    assert "".join(out) == "a " and stopped
    out, stopped = _feed_all(["xyz", "yz"], ["abxy", "z"])
    assert "".join(out) == "ab" and stopped  # the earliest start wins, not the first string listed


def test_overlapping_prefixes_hold_the_longest_possible_start() -> None:
    trimmer = StopTrimmer(["aab", "ab"])
    assert trimmer.feed("xaa") == "x"
    assert trimmer.feed("c") == "aac"
    assert trimmer.feed("aa") == ""
    assert trimmer.feed("b!") == "" and trimmer.stopped  # "aab" at 0 beats "ab" at 1


def test_match_at_the_very_start_gives_empty_text() -> None:
    out, stopped = _feed_all(["STOP"], ["STOP right there", "more"])
    assert out == ["", "", ""] and stopped
    out, stopped = _feed_all(["STOP"], ["ST", "OP"])
    assert "".join(out) == "" and stopped


# --------------------------------------------------------------------------- real quickstart stack

@pytest.fixture(scope="module")
def router(running_quickstart: RunningStack) -> Iterator[RunningRouter]:
    out = running_quickstart.out_dir
    options = RenderOptions(EXAMPLES, out)
    routes = out / ROUTES_PATH  # tokenizer paths are written relative to <out>/router
    routes.parent.mkdir(parents=True, exist_ok=True)
    routes.write_bytes(local_routes(running_quickstart.stack, running_quickstart.launcher.endpoints(), options))
    running = start_router(routes)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-chat", "tiny-pd"])
def test_stop_string_through_the_reference_engine(router: RunningRouter, model: str) -> None:
    c = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    prompt, args = "The quick brown fox", {"max_tokens": 24, "temperature": 0, "seed": 1}
    full = c.completions.create(model=model, prompt=prompt, **args).choices[0].text
    assert len(full) > 8, full
    stop = full[len(full) // 2 : len(full) // 2 + 3]  # any three characters from the middle
    expected = full[: full.find(stop)]

    done = c.completions.create(model=model, prompt=prompt, stop=[stop], **args)
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "stop"
    assert stop not in done.choices[0].text

    chunks = list(c.completions.create(model=model, prompt=prompt, stop=["never-said", stop], stream=True, **args))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == expected
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"

    unmatched = c.completions.create(model=model, prompt=prompt, stop=["never-said"], **args)
    assert unmatched.choices[0].text == full and unmatched.choices[0].finish_reason == "length"
