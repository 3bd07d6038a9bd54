"""The one exception tree of tritonstack.

Every error a user can cause derives from :class:`TritonstackError`; the CLI prints its message and
exits 1 without a traceback. Foreign exceptions (pydantic, PyYAML, OS errors) are translated into
these at the boundary where they happen, never passed through.
"""

from __future__ import annotations

__all__ = [
    "TritonstackError",
    "SpecError",
    "RenderError",
    "ValidationFailure",
    "WriteError",
    "DriftError",
    "PlanError",
    "RuntimeSetupError",
    "EnvironmentNotReady",
]


class TritonstackError(Exception):
    """Base of every error meant for the user."""

    def problem_lines(self) -> list[str]:
        """What the CLI prints, each entry after its own ``error:`` (continuation lines as they are)."""
        return [str(self)]


class SpecError(TritonstackError):
    """The stack spec is not valid. Holds one line per problem, each with file, line and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def problem_lines(self) -> list[str]:
        return self.problems


class PlanError(TritonstackError):
    """The stack does not fit its GPUs; each problem says by how much and what to change."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("the stack does not fit:\n" + "\n".join(f"  {p}" for p in self.problems))


class RenderError(TritonstackError):
    """A template could not be rendered from a valid spec (a bug or an unsupported combination)."""


class ValidationFailure(TritonstackError):
    """Rendered model configurations do not form a repository Triton would load."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def problem_lines(self) -> list[str]:
        return self.problems


class WriteError(TritonstackError):
    """The output directory could not be written safely."""


class DriftError(TritonstackError):
    """The output directory differs from what the spec renders to."""

    def __init__(self, diff: str) -> None:
        self.diff = diff
        super().__init__("the output directory has drifted from the spec")


class RuntimeSetupError(TritonstackError):
    """A runtime part (tritonserver, router, exporter) cannot start."""


class EnvironmentNotReady(RuntimeSetupError):
    """This machine lacks something the stack needs; one entry per problem, each with its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def problem_lines(self) -> list[str]:
        return self.problems
