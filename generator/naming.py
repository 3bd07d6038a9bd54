"""Triton model names of a spec model, per pool role.

Every spec model gets its own prefixed set (``<model>_preprocessing`` …) so several engines live in
one repository; spec model names never contain ``_``, so the prefix is unambiguous. The router,
exporter and launcher import these names rather than spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TritonNames", "triton_names", "spec_model_of"]

Role = Literal["aggregated", "prefill", "decode"]


@dataclass(frozen=True)
class TritonNames:
    preprocessing: str
    llm: str  # the tensorrt_llm model, or its context / generation copy
    postprocessing: str
    ensemble: str  # <m>_ensemble, <m>_prefill or <m>_decode
    bls: str | None  # our BLS; not rendered in prefill pools

    def all(self) -> list[str]:
        names = [self.preprocessing, self.llm, self.postprocessing, self.ensemble]
        return names + ([self.bls] if self.bls else [])


def triton_names(model: str, role: Role) -> TritonNames:
    llm, ensemble = {
        "aggregated": ("tensorrt_llm", "ensemble"),
        "prefill": ("context", "prefill"),
        "decode": ("generation", "decode"),
    }[role]
    return TritonNames(
        preprocessing=f"{model}_preprocessing",
        llm=f"{model}_{llm}",
        postprocessing=f"{model}_postprocessing",
        ensemble=f"{model}_{ensemble}",
        bls=None if role == "prefill" else f"{model}_bls",
    )


def spec_model_of(triton_model: str) -> str:
    """``tiny-chat_tensorrt_llm`` → ``tiny-chat``."""
    return triton_model.split("_", 1)[0]
