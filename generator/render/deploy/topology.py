"""What runs where: the facts both deployment renderings (Kubernetes, compose) are built from.

One place computes, per pool, the Triton model names to load, the GPUs a replica needs, whether a
replica spans nodes (LeaderWorkerSet), the tritonserver command line, the names and labels of the
objects; and, for the whole stack, the images and the component names. The manifest templates and
the consistency tests read these values instead of spelling names again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from generator.naming import model_triton_models, triton_names
from generator.render.disaggregation import orchestrator_world_size, pool_environment
from generator.spec import Model, Pool, Stack, uses_llm_api

__all__ = [
    "PART_OF",
    "MODELS_MOUNT",
    "CONFIG_MOUNT",
    "ROUTER_NAME",
    "EXPORTER_NAME",
    "ROUTER_CONFIG_FILE",
    "EXPORTER_CONFIG_FILE",
    "ROUTER_HEALTH_PATH",
    "ROUTER_READY_PATH",
    "EXPORTER_HEALTH_PATH",
    "router_args",
    "exporter_args",
    "PoolTopology",
    "Topology",
    "topology",
    "image_with_registry",
]

PART_OF = "tritonstack"
MODELS_MOUNT = "/models"
CONFIG_MOUNT = "/etc/tritonstack"
ROUTER_NAME = "router"
EXPORTER_NAME = "exporter"
ROUTER_CONFIG_FILE = "routes.yaml"
EXPORTER_CONFIG_FILE = "exporter.yaml"
ROUTER_HEALTH_PATH = "/health"  # live
ROUTER_READY_PATH = "/ready"  # every model has a ready replica in each pool it needs
EXPORTER_HEALTH_PATH = "/-/healthy"
# The restricted Triton APIs: only callers presenting the admin header reach them. Health, metadata
# and inference stay open to the router; the exporter reads /metrics, a separate port.
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "logging", "trace", "statistics")


def image_with_registry(image: str, registry: str | None) -> str:
    """Swap the registry part of an image reference for a mirror (``nvcr.io/nvidia/x`` → ``mirror/nvidia/x``)."""
    if registry is None:
        return image
    first, _, rest = image.partition("/")
    # The first path segment is a registry only if it looks like a host (Docker's own rule).
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"{registry.rstrip('/')}/{rest}"
    return f"{registry.rstrip('/')}/{image}"


@dataclass(frozen=True)
class PoolTopology:
    pool: Pool
    models: tuple[Model, ...]
    triton_models: tuple[str, ...]  # every Triton model of the pool, in load order
    llm_models: tuple[tuple[str, int], ...]  # (tensorrt_llm copy, its world size); none for LLM-API models
    gpus: int  # GPUs one replica needs in total (0: reference engine only)
    node_gpu_ids: tuple[int, ...]  # the node GPU ids the spec pins (gpu_ids), () when none are pinned
    ranks: int  # MPI world size of one replica (1: a plain tritonserver)
    nodes: int  # pods per replica; > 1 renders a LeaderWorkerSet
    gpus_per_pod: int
    # In-server disaggregation on engines: TensorRT-LLM orchestrator mode with spawning disabled, one
    # tritonserver per rank under mpirun (rank 0 the orchestrator); every other rank loads the
    # context and generation copies (render/disaggregation.py).
    orchestrator: bool = False
    orchestrator_models: tuple[str, ...] = ()
    # Environment of every tritonserver process of a replica (render/disaggregation.py).
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def uses_gpus(self) -> bool:
        return self.gpus > 0

    @property
    def renumbered_ids_problem(self) -> str | None:
        """Pinned ids that a pod (GPUs renumbered 0..n-1) cannot honour."""
        if self.node_gpu_ids and self.node_gpu_ids != tuple(range(len(self.node_gpu_ids))):
            return (
                f"pool {self.name}: gpu_ids {list(self.node_gpu_ids)} are node GPU ids, but a pod sees its "
                f"{self.gpus} GPU(s) as {list(range(self.gpus))}; leave gpu_ids unset (or start them at 0) for Kubernetes"
            )
        return None


@dataclass(frozen=True)
class Topology:
    stack: Stack
    pools: tuple[PoolTopology, ...]
    triton_image: str
    tritonstack_image: str
    prometheus_image: str
    grafana_image: str

    @property
    def namespace(self) -> str:
        return self.stack.deploy.namespace

    def common_labels(self) -> dict[str, str]:
        """Labels on every object; also the kustomize ``labels`` set, so they must never change per pool."""
        return {
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/instance": self.stack.name,
            "app.kubernetes.io/managed-by": "tritonstack",
            **self.stack.deploy.labels,
        }

    def selector_labels(self, component: str, pool: str | None = None) -> dict[str, str]:
        """The labels a Service, PDB, NetworkPolicy and ServiceMonitor select a component's pods by."""
        labels = {"app.kubernetes.io/instance": self.stack.name, "app.kubernetes.io/component": component}
        if pool is not None:
            labels["tritonstack.io/pool"] = pool
        return labels

    def pool_selector(self, pool: PoolTopology) -> dict[str, str]:
        return self.selector_labels("tritonserver", pool.name)


def topology(stack: Stack) -> Topology:
    deploy = stack.deploy
    triton = deploy.images.triton or stack.target.release.container_image
    registry = deploy.images.registry
    return Topology(
        stack=stack,
        pools=tuple(_pool_topology(stack, pool) for pool in stack.pools),
        triton_image=image_with_registry(triton, registry),
        tritonstack_image=image_with_registry(deploy.images.tritonstack, registry),
        prometheus_image=image_with_registry(deploy.prometheus_image, registry),
        grafana_image=image_with_registry(deploy.grafana_image, registry),
    )


def _pool_topology(stack: Stack, pool: Pool) -> PoolTopology:
    models = tuple(stack.model(name) for name in pool.models)
    triton_models: list[str] = []
    llm_models: list[tuple[str, int]] = []
    for model in models:
        triton_models += model_triton_models(stack, pool, model.name)
        # The LLM-API model starts its own ranks (tensorrt_llm.LLM spawns them), so it is never
        # loaded by the MPMD participant tritonservers that engine models need.
        if not uses_llm_api(stack, model):
            llm_models.append((triton_names(model.name, pool.role).llm, model.world_size))
    # Models that run on GPUs: engines, and checkpoints served through the LLM-API model.
    engine_models = [m for m in models if m.engine_dir is not None or uses_llm_api(stack, m)]
    # Explicit gpu_ids are node GPU ids (what a single node and compose see). A Kubernetes pod sees
    # its GPUs renumbered from 0, so it requests as many GPUs as the pool's models use together
    # (Pool.rank_gpus: every rank's GPU, both copies with in-server disaggregation).
    used = sorted(set().union(*(pool.rank_gpus(m) for m in engine_models)))
    pinned = any(pool.gpus_of(m) is not None for m in engine_models)
    node_gpu_ids = tuple(used) if pinned else ()
    gpus = len(used)
    orchestrator = orchestrator_world_size(stack, pool) > 1
    orchestrator_models: list[str] = []
    if orchestrator:
        for model in models:
            names = triton_names(model.name, pool.role, in_server_disaggregation=True)
            if names.context is not None and names.generation is not None and not uses_llm_api(stack, model):
                orchestrator_models += [names.context, names.generation]
    # The LLM-API model spawns its own ranks (tensorrt_llm.LLM), so only engines need MPMD ranks.
    ranks = (
        orchestrator_world_size(stack, pool)
        if orchestrator
        else max((m.world_size for m in engine_models if m.engine_dir is not None), default=1)
    )
    per_node = stack.target.gpus_per_node
    nodes = max(1, math.ceil(gpus / per_node)) if gpus else 1
    return PoolTopology(
        pool=pool,
        models=models,
        triton_models=tuple(triton_models),
        llm_models=tuple(llm_models),
        gpus=gpus,
        node_gpu_ids=node_gpu_ids,
        ranks=ranks,
        nodes=nodes,
        gpus_per_pod=math.ceil(gpus / nodes) if gpus else 0,
        orchestrator=orchestrator,
        orchestrator_models=tuple(orchestrator_models),
        environment=tuple(pool_environment(stack, pool).items()),
    )


def tritonserver_args(stack: Stack, pool: PoolTopology, admin_key_ref: str) -> list[str]:
    """Arguments of the serving tritonserver (rank 0): explicit model control with the pool's models,
    fixed ports, and the management APIs behind a header whose value comes from ``admin_key_ref``
    (``$(VAR)`` for Kubernetes, ``${VAR}`` for compose) — the value itself is never rendered."""
    ports = stack.deploy.triton_ports
    restricted = f"{','.join(RESTRICTED_APIS)}:{stack.deploy.restricted_api_header}={admin_key_ref}"
    args = [
        f"--model-repository={MODELS_MOUNT}",
        # explicit, not poll: a failed reload keeps the old version, and nothing loads a half-synced
        # repository (Triton's docs call poll mode unfit for production).
        "--model-control-mode=explicit",
        *[f"--load-model={name}" for name in pool.triton_models],
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--disable-auto-complete-config",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-api={restricted}",
    ]
    if pool.ranks > 1:
        args.append("--backend-config=python,shm-region-prefix-name=prefix0_")
    # Not rendered for in-server disaggregation: launch_triton_server.py adds
    # --pinned-memory-pool-byte-size=0 --enable-peer-access=false --cuda-memory-pool-byte-size=<gpu>:0
    # only for --multi-model *with* spawning (add_multi_model_config checks
    # `not args.disable_spawn_processes`), and orchestrator pools here run with spawning disabled.
    return args


def participant_args(pool: PoolTopology, rank: int) -> list[str]:
    """Arguments of a non-serving MPI rank: it only hosts its share of the tensorrt_llm models and
    opens no endpoints (the leader-mode layout of the backend's launch_triton_server.py). In
    orchestrator mode every such rank loads every context and generation copy, as upstream's
    launcher does; ``participant_ids`` decide which copy the rank actually runs."""
    names = pool.orchestrator_models if pool.orchestrator else [n for n, world in pool.llm_models if world > rank]
    return [
        f"--model-repository={MODELS_MOUNT}",
        "--model-control-mode=explicit",
        *[f"--load-model={name}" for name in names],
        "--disable-auto-complete-config",
        "--allow-http=false",
        "--allow-grpc=false",
        "--allow-metrics=false",
        f"--backend-config=python,shm-region-prefix-name=prefix{rank}_",
    ]


def server_command(stack: Stack, pool: PoolTopology, admin_key_ref: str, extra_mpi: list[str]) -> list[str]:
    """The full command of a replica's serving container: ``tritonserver`` alone for one rank, under
    ``mpirun`` (one tritonserver per rank, MPMD) when the engines are tensor/pipeline parallel —
    the backend has no world-size setting in config.pbtxt (tensorrtllm_backend issue #398)."""
    serve = ["tritonserver", *tritonserver_args(stack, pool, admin_key_ref)]
    if pool.ranks == 1:
        return serve
    # -x: ranks started on other nodes (LeaderWorkerSet) get the pool's environment too.
    exported = [arg for name, _ in pool.environment for arg in ("-x", name)]
    command = ["mpirun", "--allow-run-as-root", *exported, *extra_mpi, "-n", "1", *serve]
    for rank in range(1, pool.ranks):
        command += [":", "-n", "1", "tritonserver", *participant_args(pool, rank)]
    return command


def router_args(stack: Stack) -> list[str]:
    return [
        "router",
        "--config",
        f"{CONFIG_MOUNT}/{ROUTER_CONFIG_FILE}",
        # routes.yaml keeps the spec's bind (loopback by default); in a pod the router must listen
        # on the pod address, which the NetworkPolicy and the Service guard.
        "--host",
        "0.0.0.0",
        "--port",
        str(stack.router.port),
    ]


def exporter_args(stack: Stack) -> list[str]:
    return [
        "exporter",
        "--config",
        f"{CONFIG_MOUNT}/{EXPORTER_CONFIG_FILE}",
        "--bind",
        "0.0.0.0",
        "--port",
        str(stack.exporter.port),
    ]
