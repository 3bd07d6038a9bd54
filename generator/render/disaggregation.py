"""How the KV cache travels between the context and generation phases, per pool: the one place that
says which MPI ranks and GPUs the phases use and which environment the serving process needs.

Three layouts exist, and each needs something different from the node:

* **In-server disaggregation** (an aggregated pool with ``in_server_disaggregation: true``, engine
  backend): one tritonserver under ``mpirun`` in TensorRT-LLM orchestrator mode with spawning
  disabled. Rank 0 is the orchestrator and serves; the context copy's ranks and the generation
  copy's ranks follow, named by ``participant_ids``. This is upstream's recipe
  (triton_backend/all_models/disaggregated_serving/README.md and scripts/launch_triton_server.py
  ``--multi-model --disable-spawn-processes``:
  https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/all_models/disaggregated_serving/README.md,
  https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/scripts/launch_triton_server.py).
  With spawning enabled, participant ids are refused: ``executorImpl.cpp`` throws "Participant ids
  should not be set when using CommunicationMode::kORCHESTRATOR with spawnProcesses=true"
  (https://github.com/NVIDIA/TensorRT-LLM/blob/main/cpp/tensorrt_llm/executor/executorImpl.cpp).
  Context-only/generation-only requests in orchestrator mode were refused before tensorrtllm_backend
  v0.15.0 (https://github.com/triton-inference-server/tensorrtllm_backend/issues/653, check removed
  in commit 3dbe44c); every release we render (25.05 = 0.19 and newer) accepts them.
* **Prefill and decode pools on the engine backend**: only on 25.05 (0.19), where the executor picks
  its cache transceiver from the environment and none exists without it ("Disaggregated serving is
  not enabled"); UCX reaches another server. The 1.x backend hard-codes the MPI transceiver and the
  spec refuses such pools (``spec.stack._kv_transfer_problems``).
* **Prefill and decode pools on the LLM-API path**: ``cache_transceiver_config`` in model.yaml
  (render/model_repo/llmapi.py); no environment needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.spec import Model, Pool, Stack, uses_llm_api

__all__ = ["PhaseRanks", "in_server_layout", "orchestrator_world_size", "pool_environment", "runs_engines"]


@dataclass(frozen=True)
class PhaseRanks:
    """One model's two engine copies in an in-server disaggregated pool."""

    context_ids: tuple[int, ...]  # MPI ranks (participant_ids) of the context copy
    generation_ids: tuple[int, ...]
    context_gpus: tuple[int, ...]  # gpu_device_ids, one per rank
    generation_gpus: tuple[int, ...]


def _split_models(stack: Stack, pool: Pool) -> list[Model]:
    """The models of an in-server pool that get a context and a generation copy (not LLM-API ones)."""
    return [stack.model(name) for name in pool.models if not uses_llm_api(stack, stack.model(name))]


def in_server_layout(stack: Stack, pool: Pool) -> dict[str, PhaseRanks]:
    """Participant ids and GPUs of every split model of ``pool``: ranks are numbered across the
    pool's models, so two models in one server never share a rank (rank 0 is the orchestrator). The
    generation copy uses the ``tensor_parallel × pipeline_parallel`` GPUs after the context copy's."""
    layout: dict[str, PhaseRanks] = {}
    next_rank = 1
    for model in _split_models(stack, pool):
        world = model.world_size
        gpus = pool.rank_gpus(model)  # the context copy's GPUs, then the generation copy's
        layout[model.name] = PhaseRanks(
            context_ids=tuple(range(next_rank, next_rank + world)),
            generation_ids=tuple(range(next_rank + world, next_rank + 2 * world)),
            context_gpus=tuple(gpus[:world]),
            generation_gpus=tuple(gpus[world:]),
        )
        next_rank += 2 * world
    return layout


def runs_engines(stack: Stack, pool: Pool) -> bool:
    """Does the pool serve a TensorRT-LLM engine through the engine backend (not the reference engine)?"""
    return any(
        stack.model(name).engine_dir is not None and not uses_llm_api(stack, stack.model(name)) for name in pool.models
    )


def orchestrator_world_size(stack: Stack, pool: Pool) -> int:
    """MPI world of an in-server disaggregated replica on engines: the orchestrator plus every copy's
    ranks (README: "tp*pp of context model + tp*pp of generation model + 1"); 1 otherwise."""
    if not (pool.in_server_disaggregation and runs_engines(stack, pool)):
        return 1
    return 1 + sum(len(r.context_ids) + len(r.generation_ids) for r in in_server_layout(stack, pool).values())


def pool_environment(stack: Stack, pool: Pool) -> dict[str, str]:
    """Environment of a pool's tritonserver processes (every rank), for compose, Kubernetes and ``up``."""
    if not runs_engines(stack, pool):
        return {}
    legacy = stack.target.release.engine_kv_between_servers  # 25.05: transceiver chosen by environment
    env: dict[str, str] = {}
    if pool.in_server_disaggregation:
        # launch_triton_server.py --multi-model --disable-spawn-processes sets exactly these two.
        env["TRTLLM_ORCHESTRATOR"] = "1"
        env["TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES"] = "0"
        if legacy:
            # 0.19 creates no cache transceiver unless one is chosen here; MPI stays inside the world.
            env["TRTLLM_USE_MPI_KVCACHE"] = "1"
    elif pool.role != "aggregated" and legacy:
        # TensorRT-LLM <= 1.0 docs (docs/source/advanced/disaggregated-service.md): UCX "must be
        # enabled when using a disaggregated service"; it connects two separate servers.
        env["TRTLLM_USE_UCX_KVCACHE"] = "1"
    return env
