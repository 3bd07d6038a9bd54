"""The text the reference engine's language model continues, so that its answers read as text.

Original prose written for tritonstack (Apache-2.0, like the rest of the repository) about serving
language models; nothing in it is quoted from elsewhere. A few words outside ASCII (naïve, café,
Grüße, 日本, Zürich) keep multibyte characters in every answer, so streaming is exercised with
characters that span several tokens. Kept small (a few KB): the model tokenizes it at load time.
"""

from __future__ import annotations

__all__ = ["PASSAGES"]

PASSAGES: tuple[str, ...] = (
    (
        "A request begins as a few words typed by a person who is waiting. The router reads it, counts "
        "its tokens and picks the server with the fewest requests in flight. The preprocessing model "
        "turns the words into token ids, and the engine starts the prefill: one pass over the whole prompt "
        "that fills the key-value cache. Then the decode begins, one token at a time, and each new token "
        "is sent back to the person as soon as it exists."
    ),
    (
        "Serving a language model is mostly a question of memory. The weights take their share, the "
        "key-value cache takes the rest, and every request in the batch wants a few more blocks of it "
        "with every step. A naïve server waits for the longest request before it starts the next batch; "
        "in-flight batching lets a new request join at the next step instead, so the GPU never waits for "
        "the slowest sentence."
    ),
    (
        "The first token decides how fast a service feels. A person in a café in Zürich, with a slow "
        "connection and a cold coffee, forgives a long answer but not a long silence. Time to first token "
        "is spent in the queue and in the prefill; the tokens after it arrive at the pace of the decode, "
        "which is bounded by how quickly the weights can be read from memory."
    ),
    (
        "Streaming text is harder than it looks. A single token can be half of a character, so the "
        "postprocessing model holds back bytes until they form whole characters again. Words like Grüße "
        "or the name 日本 must arrive intact, and the spaces between words must not be lost when tokens "
        "are decoded one by one."
    ),
    (
        "When the prompts are long and the answers are short, the prefill and the decode can run on "
        "different servers. The context server reads the prompt and hands over its cache; the generation "
        "server continues from there. Each pool scales on its own, and the router carries the hand-over "
        "from one to the other."
    ),
    (
        "A good dashboard answers three questions at a glance: how many tokens per second the stack "
        "produces, how long people wait for the first one, and how full the cache is. When the cache is "
        "nearly full, new requests wait in the queue, and the waiting shows up first in the time to first "
        "token."
    ),
    (
        "Nothing here is a real model. These sentences are a small text that the reference engine "
        "continues, so that a demonstration on a laptop reads like language and not like noise. The "
        "same prompt with the same seed gives the same answer on every server, which is what the tests "
        "rely on."
    ),
)
