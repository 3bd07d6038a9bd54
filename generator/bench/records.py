"""What one benchmark request leaves behind: timestamps, text, usage and how it ended.

Times are readings of one monotonic clock (``time.perf_counter`` in real runs, a fake in tests), so
only differences mean anything. ``content_times`` holds the arrival time of every streamed chunk
that carried non-empty content; TTFT is the first of them, never the first byte or an empty
role-only chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["ErrorKind", "ERROR_KINDS", "TokenSource", "RequestRecord"]

ErrorKind = Literal[
    "connect",  # no connection could be made
    "http_status",  # the server answered with an HTTP error status
    "stall",  # the stream was open but no byte came within the stall timeout
    "closed_mid_stream",  # the connection closed, or the stream ended, before the response was complete
    "stream_error",  # the stream carried an error object, or data that is not an OpenAI chunk
    "deadline",  # the whole request took longer than the request timeout
    "empty_output",  # the stream completed without a single non-empty content chunk
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

# Where an output token count came from, in order of preference.
TokenSource = Literal["usage", "tokenizer", "chunks"]


@dataclass
class RequestRecord:
    index: int
    prompt_index: int
    sent_at: float
    ended_at: float = 0.0
    content_times: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    error: ErrorKind | None = None
    error_detail: str = ""
    # Filled after the run by the token counter (counting is kept out of the timed path).
    output_tokens: int = 0
    token_source: TokenSource = "chunks"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        return self.content_times[0] - self.sent_at if self.content_times else None

    @property
    def latency_s(self) -> float:
        return self.ended_at - self.sent_at

    @property
    def decode_s(self) -> float | None:
        """From the first content to the end of the response: the time spent on tokens 2..N."""
        return self.ended_at - self.content_times[0] if self.content_times else None

    @property
    def chunk_gaps_s(self) -> list[float]:
        times = self.content_times
        return [later - earlier for earlier, later in zip(times, times[1:])]

    @property
    def decode_tokens_per_s(self) -> float | None:
        """(N − 1) tokens over the decode time, i.e. 1 / TPOT; undefined for one token or none."""
        decode = self.decode_s
        if not self.ok or decode is None or decode <= 0 or self.output_tokens < 2:
            return None
        return (self.output_tokens - 1) / decode
