"""``tritonstack bench``: one repeatable benchmark of OpenAI-compatible stacks, side by side.

Data flow: ``settings`` (what to run) → ``workload`` (prompts) → ``runner`` drives ``client``
(one timed streaming request → ``records.RequestRecord``) → ``tokens`` counts output tokens →
``stats`` summarizes → ``report`` (tables, JSON, CSV) and ``plots`` (PNG); ``generator.commands.bench`` is the CLI.
"""

from generator.bench.settings import BenchError, BenchSettings, Endpoint, LoadPoint, Timeouts

__all__ = ["BenchError", "BenchSettings", "Endpoint", "LoadPoint", "Timeouts"]
