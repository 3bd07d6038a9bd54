"""Progress of a running benchmark, on stderr so stdout stays the result tables.

On a terminal one line per load point is redrawn in place after every request; elsewhere (CI logs,
pipes) a line is written when a point finishes, so logs do not fill with carriage returns.
"""

from __future__ import annotations

from typing import TextIO

from generator.bench.records import RequestRecord

__all__ = ["Progress"]


class Progress:
    def __init__(self, stream: TextIO, interactive: bool | None = None) -> None:
        self._stream = stream
        self._interactive = stream.isatty() if interactive is None else interactive
        self._prefix = ""
        self._total = 0
        self._done = 0
        self._failed = 0

    def start(self, stack: str, label: str, total: int) -> None:
        self._prefix, self._total, self._done, self._failed = f"{stack} {label}", total, 0, 0
        if self._interactive:
            self._draw()

    def request_done(self, record: RequestRecord) -> None:
        self._done += 1
        self._failed += 0 if record.ok else 1
        if self._interactive:
            self._draw()

    def finish(self) -> None:
        if self._interactive:
            self._stream.write("\n")
        else:
            self._stream.write(self._line() + "\n")
        self._stream.flush()

    def note(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()

    def _line(self) -> str:
        failed = f", {self._failed} failed" if self._failed else ""
        return f"  {self._prefix}: {self._done}/{self._total} requests{failed}"

    def _draw(self) -> None:
        self._stream.write("\r" + self._line())
        self._stream.flush()
