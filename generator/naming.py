"""Triton model names of a spec model, per pool role.

Every spec model gets its own prefixed set (``<model>_preprocessing`` …) so several engines live in
one repository; spec model names never contain ``_``, so the prefix is unambiguous. The router,
exporter and launcher import these names rather than spelling them again.

Models served through the LLM-API target (Triton after 26.07, or ``llm_api: true``) are one Triton
model, ``<model>_llmapi``, instead of the engine set; :func:`pool_triton_models` is the one answer
to "which Triton models does this pool load", for the launcher and the deployment manifests alike.

Service names are here too: each pool's headless Service and the cluster DNS names of Services,
which the manifests create and the router, exporter and Prometheus address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from generator.spec import Pool, Stack, uses_llm_api

__all__ = [
    "TritonNames",
    "headless_dns",
    "headless_service",
    "llmapi_model_name",
    "model_triton_models",
    "pool_triton_models",
    "service_dns",
    "spec_model_of",
    "triton_names",
]

Role = Literal["aggregated", "prefill", "decode"]


@dataclass(frozen=True)
class TritonNames:
    preprocessing: str
    llm: str  # what the ensemble and BLS call: tensorrt_llm, a context/generation copy, or the disaggregated BLS
    postprocessing: str
    ensemble: str  # <m>_ensemble, <m>_prefill or <m>_decode
    bls: str | None  # our BLS; not rendered in prefill pools
    # In-server disaggregation: the two tensorrt_llm copies the disaggregated-serving BLS (llm) calls.
    context: str | None = None
    generation: str | None = None

    def all(self) -> list[str]:
        names = [self.preprocessing, self.llm, self.postprocessing, self.ensemble]
        names += [n for n in (self.context, self.generation, self.bls) if n]
        return names


def triton_names(model: str, role: Role, *, in_server_disaggregation: bool = False) -> TritonNames:
    """``in_server_disaggregation`` (aggregated pools only): the context and generation phases run as
    two tensorrt_llm copies in the same server, orchestrated by ``<m>_disaggregated_serving_bls``."""
    llm, ensemble = {
        "aggregated": ("tensorrt_llm", "ensemble"),
        "prefill": ("context", "prefill"),
        "decode": ("generation", "decode"),
    }[role]
    split = in_server_disaggregation and role == "aggregated"
    return TritonNames(
        preprocessing=f"{model}_preprocessing",
        llm=f"{model}_disaggregated_serving_bls" if split else f"{model}_{llm}",
        postprocessing=f"{model}_postprocessing",
        ensemble=f"{model}_{ensemble}",
        bls=None if role == "prefill" else f"{model}_bls",
        context=f"{model}_context" if split else None,
        generation=f"{model}_generation" if split else None,
    )


def llmapi_model_name(model_name: str) -> str:
    """The one Triton model that serves a spec model through the LLM-API target."""
    return f"{model_name}_llmapi"


def model_triton_models(stack: Stack, pool: Pool, model: str) -> list[str]:
    """The Triton models that serve spec ``model`` in ``pool``, in load order."""
    if uses_llm_api(stack, stack.model(model)):
        return [llmapi_model_name(model)]
    return triton_names(model, pool.role, in_server_disaggregation=pool.in_server_disaggregation).all()


def pool_triton_models(stack: Stack, pool: Pool) -> list[str]:
    """Every Triton model a replica of ``pool`` loads (``--load-model``), in load order."""
    return [name for model in pool.models for name in model_triton_models(stack, pool, model)]


def spec_model_of(triton_model: str) -> str:
    """``tiny-chat_tensorrt_llm`` → ``tiny-chat``."""
    return triton_model.split("_", 1)[0]


def headless_service(pool: str) -> str:
    """The Service whose DNS name resolves to every replica of a pool (router and exporter discovery)."""
    return f"{pool}-headless"


def service_dns(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"


def headless_dns(pool: str, namespace: str) -> str:
    return service_dns(headless_service(pool), namespace)
