"""Render the router's ``router/routes.yaml`` from the spec.

Two flavours of the same document, built as the router's own ``Routes`` objects (``generator/router/
config.py``), so a wrong field fails at render time and the router parses what was rendered:

* :func:`render_routes` — for deployment: each pool's replicas are found through its Kubernetes
  headless Service, ``<pool>-headless.<namespace>.svc.cluster.local``, ports ``deploy.triton_ports``;
* :func:`local_routes` — for the local launcher, with the static endpoints it started.

Per model it records how it is served (by default the engine models themselves, spoken to with
token ids: the aggregated pool's ``<m>_tensorrt_llm``, or the prefill pool's ``<m>_context`` then
the decode pool's ``<m>_generation``; ``router.data_path`` can pick the BLS or the ensembles
instead; an LLM-API model's ``<m>_llmapi`` with the ``llmapi`` protocol) plus what the router checks
before anything reaches Triton: tokenizer, input/output limits, chat and streaming.
"""

from __future__ import annotations

from typing import Any, Literal

from generator import yamlio
from generator.naming import headless_dns, llmapi_model_name, triton_names
from generator.render.options import RenderOptions
from generator.router.config import (
    ROUTES_API_VERSION,
    Aggregated,
    Disaggregated,
    DnsEndpoints,
    Endpoint,
    ModelRoute,
    Phase,
    PoolRoute,
    Protocol,
    Routes,
    parse_routes,
)
from generator.spec import Model, Pool, Stack, uses_llm_api

__all__ = ["ROUTES_PATH", "local_routes", "render_routes", "routes_config"]

ROUTES_PATH = "router/routes.yaml"

Endpoints = dict[str, list[tuple[str, int, int, int]]]


def _tokenizer_dir(model: Model, options: RenderOptions | None) -> str:
    """Relative spec paths are relative to the spec file; in routes.yaml, to routes.yaml itself."""
    if options is None:
        return model.tokenizer_dir
    return options.from_output(model.tokenizer_dir, "router")


def _serving(stack: Stack, model: Model) -> Aggregated | Disaggregated:
    """Which Triton model the router calls in each pool, and the tensor contract it speaks.

    ``router.data_path`` picks it for engine-set models (issue 14):

    * ``engine`` (the default): the engine model itself with token ids, protocol ``engine``. The
      router applies the chat template, tokenizes, detokenizes and counts, so no Python model sits
      on Triton's hot path. Aggregated pools: ``<m>_tensorrt_llm`` (or, with in-server
      disaggregation, ``<m>_disaggregated_serving_bls``, which takes the same tensors); prefill →
      decode: ``<m>_context`` then ``<m>_generation``.
    * ``bls``: our BLS, text in and out (protocol ``ensemble``). It detokenizes incrementally and,
      when the client goes away, stops the engine's request (Triton 2.51 does not cancel an
      ensemble's composing requests). Prefill pools: the prefill ensemble, which answers once with
      the first token and context_phase_params.
    * ``ensemble``: the ensembles themselves (``<m>_ensemble``; ``<m>_prefill`` → ``<m>_decode``).

    The ensemble and BLS are rendered whichever is chosen, for clients that call Triton themselves.
    LLM-API models: ``<m>_llmapi`` with protocol ``llmapi`` (text_input + sampling_param_* in,
    cumulative text_output out).
    """
    data_path = stack.router.data_path
    pools = [p for p in stack.pools if model.name in p.models]
    aggregated = [p for p in pools if p.role == "aggregated"]
    if aggregated:
        pool = aggregated[0]  # a model in several aggregated pools is served by the first
        if uses_llm_api(stack, model):
            # One python model takes text and sampling_param_* inputs and answers text_output.
            return Aggregated(pool=pool.name, triton_model=llmapi_model_name(model.name), protocol="llmapi")
        names = triton_names(model.name, "aggregated", in_server_disaggregation=pool.in_server_disaggregation)
        triton_model = {
            "engine": names.llm,
            "bls": _bls(model.name, "aggregated"),
            "ensemble": names.ensemble,
        }
        return Aggregated(pool=pool.name, triton_model=triton_model[data_path], protocol=_protocol(data_path))
    prefill = next(p for p in pools if p.role == "prefill")
    decode = stack.partner_of(prefill)
    assert decode is not None  # the spec's cross-checks guarantee a partner
    if uses_llm_api(stack, model):
        # Both phases are tritonstack's LLM-API model (render/model_repo/llmapi.py): request_type parameter,
        # disaggregated_params from the prefill answer into the decode request.
        name = llmapi_model_name(model.name)
        return Disaggregated(
            prefill=Phase(pool=prefill.name, triton_model=name),
            decode=Phase(pool=decode.name, triton_model=name),
            protocol="llmapi",
        )
    prefill_names, decode_names = triton_names(model.name, "prefill"), triton_names(model.name, "decode")
    phases = {
        "engine": (prefill_names.llm, decode_names.llm),
        "bls": (prefill_names.ensemble, _bls(model.name, "decode")),
        "ensemble": (prefill_names.ensemble, decode_names.ensemble),
    }[data_path]
    return Disaggregated(
        prefill=Phase(pool=prefill.name, triton_model=phases[0]),
        decode=Phase(pool=decode.name, triton_model=phases[1]),
        protocol=_protocol(data_path),
    )


def _protocol(data_path: str) -> Protocol:
    return "engine" if data_path == "engine" else "ensemble"


def _bls(model: str, role: Literal["aggregated", "decode"]) -> str:
    name = triton_names(model, role).bls
    assert name is not None  # rendered in every aggregated and decode pool
    return name


def _pool_dns(stack: Stack, pool: Pool) -> PoolRoute:
    ports = stack.deploy.triton_ports
    dns = DnsEndpoints(
        name=headless_dns(pool.name, stack.deploy.namespace),
        http=ports.http,
        grpc=ports.grpc,
        metrics=ports.metrics,
    )
    return PoolRoute(role=pool.role, dns=dns)


def _model_route(stack: Stack, model: Model, options: RenderOptions | None) -> ModelRoute:
    release = stack.target.release
    return ModelRoute(
        tokenizer_dir=_tokenizer_dir(model, options),
        max_input_len=model.max_input_len,
        max_output_len=model.max_output_len,
        chat=model.chat,
        streaming=model.streaming,
        add_special_tokens=model.add_special_tokens,
        seed_input=release.seed_input,
        token_count_outputs=release.returns_token_counts,
        serving=_serving(stack, model),
    )


def routes_config(stack: Stack, pools: dict[str, PoolRoute], options: RenderOptions | None) -> Routes:
    """The router's config as the router's own types: a wrong field fails here, at render time."""
    return Routes(
        apiVersion=ROUTES_API_VERSION,
        router=stack.router,
        models={model.name: _model_route(stack, model, options) for model in stack.models},
        pools=pools,
    )


def _dump(routes: Routes) -> bytes:
    document: dict[str, Any] = routes.model_dump(mode="json", by_alias=True)
    # A pool lists either static endpoints or a DNS name: only the one given is written.
    document["pools"] = {
        name: pool.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for name, pool in routes.pools.items()
    }
    header = "# Rendered by tritonstack from the stack spec; edit the spec, not this file.\n"
    text = header + yamlio.safe_dump(document, sort_keys=False, default_flow_style=False)
    parse_routes(text, ROUTES_PATH)  # what we write, the router must read
    return text.encode()


def render_routes(stack: Stack, options: RenderOptions | None = None) -> dict[str, bytes]:
    pools = {pool.name: _pool_dns(stack, pool) for pool in stack.pools}
    return {ROUTES_PATH: _dump(routes_config(stack, pools, options))}


def local_routes(stack: Stack, endpoints: Endpoints, options: RenderOptions | None = None) -> bytes:
    """routes.yaml for replicas started on this machine: pool → [(host, http, grpc, metrics)]."""
    pools = {
        pool.name: PoolRoute(
            role=pool.role,
            endpoints=[
                Endpoint(host=host, http=http, grpc=grpc, metrics=metrics)
                for host, http, grpc, metrics in endpoints.get(pool.name, [])
            ],
        )
        for pool in stack.pools
    }
    return _dump(routes_config(stack, pools, options))
