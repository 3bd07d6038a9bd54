"""What a verification found: one :class:`CheckResult` per check and target, as a table or JSON.

Checks never raise for what they find on the stack; they return a result that says what was
expected and what came back, so one run reports every problem at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

__all__ = ["CheckResult", "failed", "passed", "render_json", "render_table"]


@dataclass(frozen=True)
class CheckResult:
    check: str  # e.g. "config", "ensemble/grpc-stream", "router/chat-stream", "metrics/triton"
    target: str  # what was checked: a Triton model, "chat/0 tiny-chat_ensemble", a URL
    passed: bool
    detail: str = ""

    def at(self, where: str) -> CheckResult:
        """The same result with ``where`` (a pool replica) in front of its target."""
        return replace(self, target=f"{where} {self.target}".strip())


def passed(check: str, target: str, detail: str = "") -> CheckResult:
    return CheckResult(check, target, True, detail)


def failed(check: str, target: str, detail: str) -> CheckResult:
    return CheckResult(check, target, False, detail)


def render_table(results: Sequence[CheckResult], *, width: int = 100) -> str:
    """check | target | result | detail, then a one-line summary."""
    rows = [(r.check, r.target, "ok" if r.passed else "FAIL", _one_line(r.detail, width)) for r in results]
    header = ("check", "target", "result", "detail")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [_row(header, widths)]
    lines.append(_row(tuple("-" * w for w in widths) + ("-" * 6,), widths))
    lines += [_row(row, widths) for row in rows]
    failures = sum(not r.passed for r in results)
    lines.append("")
    lines.append(f"{len(results) - failures} passed, {failures} failed")
    return "\n".join(lines)


def render_json(results: Iterable[CheckResult]) -> str:
    items = [asdict(r) for r in results]
    return json.dumps(
        {"passed": all(i["passed"] for i in items), "results": items}, indent=2, ensure_ascii=False
    )


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    fixed = "  ".join(cell.ljust(w) for cell, w in zip(cells[:3], widths))
    return f"{fixed}  {cells[3]}".rstrip()


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
