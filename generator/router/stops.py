"""Stop strings the OpenAI way: the answer ends *before* the first stop string, finish_reason "stop".

Triton's models get the stop strings too (``stop_words`` / ``sampling_param_stop``) so the engine can
end early, but what they return differs: the engine-based set keeps the stop word in its text, the
LLM-API model takes only one stop string, and a stop string may arrive split across streamed
pieces. So the router trims, streaming included: it holds back only the trailing text that could
still be the start of a stop string, releases the rest at once, and at the first full match cuts the
text there and reports that the choice is finished (the caller then stops reading, which cancels the
upstream request).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopTrimmer"]


class StopTrimmer:
    """Feed streamed text pieces; get back what may be sent now.

    ``feed`` returns the text that is safe to emit; after a match, ``stopped`` is true and every later
    call returns "". ``flush`` releases what was held back once the stream ended without a match.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cut = _first_match(buffer, self._stops)
        if cut is not None:
            self._held, self.stopped = "", True
            return buffer[:cut]
        keep = _longest_partial(buffer, self._stops)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _first_match(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest full stop string starts, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _longest_partial(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string.

    Any later match must start inside that suffix (a full match was already ruled out), so the text
    before it can be released.
    """
    longest = max(len(s) for s in stops) - 1
    for size in range(min(longest, len(text)), 0, -1):
        tail = text[-size:]
        if any(s.startswith(tail) for s in stops):
            return size
    return 0
