"""PNG plots of a benchmark: aggregate tokens/s against load, and the TTFT distribution.

Uses matplotlib's object API with the Agg canvas directly (no pyplot), so no global figure state
and no display is involved.
"""

from __future__ import annotations

from pathlib import Path

from generator.bench.settings import BenchError
from generator.bench.stats import StackSummary

__all__ = ["plot_throughput", "plot_ttft"]


def _figure():  # -> matplotlib.figure.Figure
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (optional dependency)
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise BenchError("plots need matplotlib (pip install 'tritonstack[bench]'), or pass --no-plots") from None
    figure = Figure(figsize=(7.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_throughput(stacks: list[StackSummary], path: Path) -> None:
    """Aggregate output tokens/s per stack against concurrency (or offered Poisson rate)."""
    figure = _figure()
    axes = figure.add_subplot()
    kinds = {p.kind for s in stacks for p in s.points[1:]}
    for stack in stacks:
        points = [p for p in stack.points[1:] if p.completed]
        axes.plot([p.value for p in points], [p.aggregate_tokens_per_s for p in points], marker="o", label=stack.name)
    axes.set_xlabel("offered load (requests/s, Poisson)" if kinds == {"rate"} else "concurrent clients")
    if kinds != {"rate"}:
        levels = sorted({p.value for s in stacks for p in s.points[1:]})
        axes.set_xscale("log", base=2)
        axes.set_xticks(levels, labels=[f"{v:g}" for v in levels])
        axes.minorticks_off()
    axes.set_ylabel("aggregate output tokens/s")
    axes.set_title("Throughput against load")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_ttft(stacks: list[StackSummary], ttfts_s: dict[str, list[float]], path: Path) -> None:
    """Empirical CDF of the serial run's TTFT per stack (milliseconds)."""
    figure = _figure()
    axes = figure.add_subplot()
    for stack in stacks:
        values = sorted(v * 1000.0 for v in ttfts_s.get(stack.name, []))
        if not values:
            continue
        # A step from 0 at the fastest request to 1 at the slowest.
        fractions = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
        axes.step([values[0], *values], fractions, where="post", label=f"{stack.name} (n={len(values)})")
    axes.set_xlabel("time to first token, ms (serial run)")
    axes.set_ylabel("fraction of requests")
    axes.set_ylim(0, 1.02)
    axes.set_title("TTFT distribution")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
