"""The stack spec: a closed, typed description of a whole serving stack.

Every default lives here, on the field it belongs to. ``load_spec`` reads a YAML file, validates it
and turns every problem into a line that names the file, the line and the field path, and says what
would be valid. Names that become directories, Triton model names or Kubernetes objects are
restricted to a safe character set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from generator.errors import SpecError
from generator.spec.base import Closed, ModelName, PathText, PoolName, PositiveInt
from generator.spec.deploy import DeploySettings
from generator.spec.exporter import ExporterSettings
from generator.spec.model_facts import ModelFacts
from generator.spec.releases import RELEASES, TritonRelease
from generator.spec.router import RouterSettings
from generator.spec.source import Located, SourceMap, format_path, load_yaml, parse_yaml

__all__ = [
    "API_VERSION",
    "Stack",
    "Model",
    "Pool",
    "ReferenceEngine",
    "KvCache",
    "CacheTransceiver",
    "Instances",
    "Target",
    "RouterSettings",
    "ExporterSettings",
    "DeploySettings",
    "uses_llm_api",
    "load_spec",
    "parse_spec",
    "spec_from_data",
    "json_schema",
]

API_VERSION = "tritonstack/v1"

class Target(Closed):
    """Where the stack runs."""

    triton: str = Field(
        default="25.12",
        description="Triton container release (YY.MM), e.g. '25.12' for tritonserver:25.12-trtllm-python-py3",
    )
    gpu: str | None = Field(default=None, description="GPU kind of the nodes, e.g. 'b200' or 'gb10'")
    gpus_per_node: PositiveInt = 8
    price_per_gpu_hour: float | None = Field(default=None, gt=0, description="For the planner's $/M tokens")

    @property
    def release(self) -> TritonRelease:
        return RELEASES[self.triton]

    @field_validator("triton")
    @classmethod
    def _known_release(cls, value: str) -> str:
        if value not in RELEASES:
            known = ", ".join(sorted(RELEASES))
            raise ValueError(f"release {value!r} is not supported; use one of {known}")
        return value


class ReferenceEngine(Closed):
    """The CPU reference engine: our stand-in for a TensorRT-LLM engine where no GPU exists."""

    seed: int = Field(default=0, description="Weights seed of the small deterministic language model")
    prefill_tokens_per_s: float | None = Field(
        default=None, gt=0, description="Simulated prefill speed; unset runs as fast as the CPU allows"
    )
    decode_tokens_per_s: float | None = Field(
        default=None, gt=0, description="Simulated decode speed per sequence; unset runs as fast as the CPU allows"
    )
    kv_blocks: PositiveInt = Field(default=4096, description="Paged KV cache size in blocks")
    tokens_per_block: PositiveInt = 32


class KvCache(Closed):
    max_tokens: PositiveInt | None = Field(
        default=None,
        description="KV cache budget in tokens (max_tokens_in_paged_kv_cache); the planner fills it when unset",
    )
    free_gpu_mem_fraction: float | None = Field(default=None, gt=0, le=1)
    reuse: bool = Field(default=False, description="Block reuse across requests; needs paged context FMHA")
    host_memory_bytes: int = Field(default=0, ge=0)


class CacheTransceiver(Closed):
    """How an LLM-API model in a prefill/decode pair moves KV from the prefill to the decode pool.

    Rendered as ``cache_transceiver_config`` in ``model.yaml`` (TensorRT-LLM
    tensorrt_llm/llmapi/llm_args.py ``CacheTransceiverConfig``). Only the LLM-API / PyTorch path has
    a transceiver that crosses servers; the engine backend of Triton 25.06-26.07 is MPI-only.
    """

    backend: Literal["UCX", "NIXL"] = Field(default="UCX", description="KV transfer library between the pools")
    max_tokens_in_buffer: PositiveInt | None = Field(
        default=None, description="Transfer buffer size in tokens; unset renders max_input_len (at least one prompt)"
    )


class Instances(Closed):
    preprocessing: PositiveInt = 1
    postprocessing: PositiveInt = 1
    bls: PositiveInt = 1


class Model(Closed):
    """One LLM served by the stack."""

    name: ModelName
    engine_dir: PathText | None = Field(
        default=None, description="TensorRT-LLM engine directory on the serving node (rank*.engine + config.json)"
    )
    reference_engine: ReferenceEngine | None = Field(
        default=None, description="Serve this model with the CPU reference engine instead of TensorRT-LLM"
    )
    tokenizer_dir: PathText = Field(description="Hugging Face tokenizer directory on the serving node")
    checkpoint_dir: PathText | None = Field(
        default=None,
        description="Hugging Face checkpoint directory (config.json, hf_quant_config.json) for the planner",
    )
    facts: ModelFacts | None = Field(
        default=None,
        description="Architecture numbers for the planner when neither the engine's nor the checkpoint's "
        "config.json is readable here",
    )
    llm_api: bool = Field(
        default=False,
        description="Serve through Triton's LLM-API model (model.yaml, no engine) instead of the engine set; "
        "forced for Triton releases after 26.07",
    )
    precision: Literal["bf16", "fp16", "fp8", "nvfp4", "mxfp4", "int4_awq"] = "bf16"
    kv_cache_dtype: Literal["auto", "bf16", "fp16", "fp8", "nvfp4"] = "auto"
    tensor_parallel: PositiveInt = 1
    pipeline_parallel: PositiveInt = 1
    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    max_input_len: PositiveInt = 2048
    max_output_len: PositiveInt = 1024
    max_num_tokens: PositiveInt | None = None
    kv_cache: KvCache = KvCache()
    cache_transceiver: CacheTransceiver = Field(
        default=CacheTransceiver(),
        description="LLM-API models in prefill/decode pools: the KV transfer between the pools",
    )
    streaming: bool = Field(default=True, description="Token streaming; renders decoupled models")
    chat: bool = Field(default=True, description="Accept chat requests; the tokenizer needs a chat template")
    add_special_tokens: bool = True
    skip_special_tokens: bool = True
    exclude_input_in_output: bool = True
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = "guaranteed_no_evict"
    max_queue_delay_microseconds: Annotated[int, Field(ge=0)] = 0
    max_queue_size: Annotated[int, Field(ge=0)] = 0
    instances: Instances = Instances()
    gpu_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="GPUs of one instance (one id per TP×PP rank); rendered as gpu_device_ids"
    )

    @property
    def max_seq_len(self) -> int:
        return self.max_input_len + self.max_output_len

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @model_validator(mode="after")
    def _engine_choice(self) -> Model:
        if self.llm_api:
            if self.engine_dir is not None:
                raise ValueError(
                    "llm_api serves a checkpoint, not an engine: remove engine_dir and set checkpoint_dir"
                )
            if self.checkpoint_dir is None and self.reference_engine is None:
                raise ValueError("llm_api needs checkpoint_dir (the Hugging Face or ModelOpt checkpoint to serve)")
        elif (self.engine_dir is None) == (self.reference_engine is None):
            raise ValueError(
                "set exactly one of engine_dir (a TensorRT-LLM engine) or reference_engine (CPU stand-in)"
            )
        if self.gpu_ids is not None and len(self.gpu_ids) != self.world_size:
            raise ValueError(
                f"gpu_ids lists {len(self.gpu_ids)} GPU(s) but tensor_parallel × pipeline_parallel is "
                f"{self.world_size}; list one GPU per rank"
            )
        if self.streaming and self.instances.postprocessing > 1:
            raise ValueError(
                "instances.postprocessing must be 1 for a streaming model: postprocessing keeps each stream's "
                "detokenizer state in its process (the BLS detokenizes in parallel; raise instances.bls instead)"
            )
        if self.max_num_tokens is not None and self.max_num_tokens < self.max_input_len:
            raise ValueError(
                f"max_num_tokens ({self.max_num_tokens}) is below max_input_len ({self.max_input_len}); "
                "a full prompt could never be scheduled — raise max_num_tokens or enable chunked context"
            )
        return self


class Pool(Closed):
    """A set of identical tritonserver replicas serving some models in one role."""

    name: PoolName
    role: Literal["aggregated", "prefill", "decode"] = "aggregated"
    models: Annotated[list[ModelName], Field(min_length=1)]
    replicas: PositiveInt = 1
    partner: PoolName | None = Field(
        default=None,
        description="For a prefill pool, its decode pool (and the reverse); may be left out when there is one pair",
    )
    in_server_disaggregation: bool = Field(
        default=False,
        description="Aggregated pools: run each model's context and generation phases as two engine instances in "
        "the same server, orchestrated by disaggregated_serving_bls (TensorRT-LLM orchestrator mode). Prefill and "
        "decode pools scale the phases separately instead",
    )
    gpu_ids: dict[ModelName, list[Annotated[int, Field(ge=0)]]] | None = Field(
        default=None,
        description="Per model, the GPUs this pool's replicas use, overriding the model's gpu_ids "
        "(e.g. prefill on GPUs 2-3, decode on 4-5)",
    )

    def gpus_of(self, model: Model) -> list[int] | None:
        """The GPUs the spec pins for ``model`` in this pool (one per rank), or None when unpinned."""
        if self.gpu_ids is not None and model.name in self.gpu_ids:
            return self.gpu_ids[model.name]
        return model.gpu_ids

    def rank_gpus(self, model: Model) -> list[int]:
        """GPU indices (within one replica) of every rank of ``model``, one per rank as
        gpu_device_ids says: the pinned ones, else 0..world_size-1 (the tensorrtllm backend's
        default). With in-server disaggregation the replica holds two engine copies: the context
        copy's GPUs, then the generation copy's (the next world_size GPUs), each with the whole model.
        The plan, the model repository and the manifests all place ranks by this."""
        world = model.world_size
        gpus = list(self.gpus_of(model) or range(world))
        if self.in_server_disaggregation:
            gpus += [gpu + world for gpu in gpus]
        return gpus


class Stack(Closed):
    """The whole stack. Field order here is the order of ``tritonstack schema``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    api_version: Literal["tritonstack/v1"] = Field(alias="apiVersion")
    name: PoolName
    target: Target = Target()
    models: Annotated[list[Model], Field(min_length=1)]
    pools: Annotated[list[Pool], Field(min_length=1)]
    router: RouterSettings = RouterSettings()
    exporter: ExporterSettings = ExporterSettings()
    deploy: DeploySettings = DeploySettings()

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)

    def partner_of(self, pool: Pool) -> Pool | None:
        """The decode pool of a prefill pool, or the prefill pool of a decode pool."""
        if pool.role == "aggregated":
            return None
        if pool.partner is not None:
            return self.pool(pool.partner)
        other_role = "decode" if pool.role == "prefill" else "prefill"
        candidates = [p for p in self.pools if p.role == other_role]
        return candidates[0] if len(candidates) == 1 else None


def uses_llm_api(stack: Stack, model: Model) -> bool:
    """Whether ``model`` is served through the LLM-API model set: when the target release has no
    engine backend or the model asks for it (``llm_api: true``); never for the reference engine."""
    if model.reference_engine is not None:
        return False
    return (not stack.target.release.engine_backend) or model.llm_api


# Cross-field checks run after the typed parse; each returns (field path, message) pairs so the
# loader can attach file and line.
Problem = tuple[tuple[str | int, ...], str]


def _cross_checks(stack: Stack) -> list[Problem]:
    problems: list[Problem] = []
    problems += _unique_names(stack)
    if problems:
        return problems
    model_names = {m.name for m in stack.models}
    pool_names = {p.name for p in stack.pools}
    served: dict[str, list[str]] = {m: [] for m in model_names}
    for i, pool in enumerate(stack.pools):
        seen: set[str] = set()
        for j, name in enumerate(pool.models):
            if name not in model_names:
                problems.append(
                    (("pools", i, "models", j), f"unknown model {name!r}; models are {sorted(model_names)}")
                )
            elif name in seen:
                problems.append((("pools", i, "models", j), f"model {name!r} is listed twice in this pool"))
            else:
                served[name].append(pool.name)
            seen.add(name)
        problems += _partner_problems(stack, i, pool, pool_names)
        problems += _kv_transfer_problems(stack, i, pool, model_names)
        for name, gpus in (pool.gpu_ids or {}).items():
            if name not in pool.models:
                problems.append((("pools", i, "gpu_ids", name), f"model {name!r} is not in this pool's models"))
            elif name in model_names and len(gpus) != stack.model(name).world_size:
                problems.append(
                    (
                        ("pools", i, "gpu_ids", name),
                        f"lists {len(gpus)} GPU(s) but {name} needs tensor_parallel × pipeline_parallel = "
                        f"{stack.model(name).world_size}",
                    )
                )
    for i, model in enumerate(stack.models):
        if not served[model.name]:
            problems.append(
                (("models", i, "name"), f"model {model.name!r} is in no pool; add it to a pool's models or remove it")
            )
        if model.engine_dir is not None and stack.target.release.engine_backend is False:
            problems.append(
                (
                    ("models", i, "engine_dir"),
                    f"Triton {stack.target.triton} has no engine-based TensorRT-LLM backend; "
                    "use a release up to 26.07",
                )
            )
    return problems


def _unique_names(stack: Stack) -> list[Problem]:
    problems: list[Problem] = []
    names_of = {"models": [m.name for m in stack.models], "pools": [p.name for p in stack.pools]}
    for collection, names in names_of.items():
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first:
                problems.append(((collection, i, "name"), f"duplicate name {name!r} (also {collection}[{first[name]}])"))
            first.setdefault(name, i)
    return problems


def _partner_problems(stack: Stack, index: int, pool: Pool, pool_names: set[str]) -> list[Problem]:
    here = ("pools", index)
    if pool.role == "aggregated":
        if pool.partner is not None:
            return [((*here, "partner"), "only prefill and decode pools have a partner; remove it")]
        return []
    if pool.in_server_disaggregation:
        return [
            (
                (*here, "in_server_disaggregation"),
                "only aggregated pools split phases inside one server; a prefill/decode pair already splits them",
            )
        ]
    if pool.partner is not None and pool.partner not in pool_names:
        return [((*here, "partner"), f"unknown pool {pool.partner!r}; pools are {sorted(pool_names)}")]
    partner = stack.partner_of(pool)
    wanted = "decode" if pool.role == "prefill" else "prefill"
    if partner is None:
        return [
            (
                (*here, "partner"),
                f"a {pool.role} pool needs a {wanted} pool serving the same models; add one, "
                "or name it with partner: when there are several",
            )
        ]
    if partner.role != wanted:
        return [((*here, "partner"), f"partner {partner.name!r} has role {partner.role}; it must be {wanted}")]
    missing = sorted(set(pool.models) - set(partner.models))
    if missing:
        return [
            (
                (*here, "models"),
                f"{missing} not served by the {wanted} pool {partner.name!r}; "
                "a disaggregated model needs both halves",
            )
        ]
    return []


def _kv_transfer_problems(stack: Stack, index: int, pool: Pool, model_names: set[str]) -> list[Problem]:
    """Disaggregation the serving node could not run: the KV cache must be able to travel between
    the context and generation phases.

    * Engine backend, Triton 25.06-26.07 (TensorRT-LLM 0.20-1.2): the backend builds its executor with
      ``CacheTransceiverConfig(BackendType::MPI)``; the MPI transceiver reaches ranks of its own MPI
      world only, so a prefill and a decode tritonserver cannot move KV
      (https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/inflight_batcher_llm/src/model_instance_state.cc).
      The reference engine is exempt: it carries its state in context_phase_params, as the LLM-API
      path's UCX/NIXL transceivers let separate servers do, and it is labelled as a CPU stand-in.
    * LLM-API path, Triton 25.05 (TensorRT-LLM 0.19): CacheTransceiverConfig has no ``backend`` yet.
    """
    here = ("pools", index)
    release = stack.target.release
    problems: list[Problem] = []
    for j, name in enumerate(pool.models):
        if name not in model_names:
            continue
        model = stack.model(name)
        llm_api = uses_llm_api(stack, model)
        if pool.in_server_disaggregation and llm_api:
            problems.append(
                (
                    (*here, "in_server_disaggregation"),
                    f"{name} is served through the LLM-API model, which has no in-server context/generation "
                    "split; serve it from a prefill pool and a decode pool (UCX/NIXL cache transceiver) instead",
                )
            )
        if pool.role == "aggregated":
            continue
        if model.engine_dir is not None and not llm_api and not release.engine_kv_between_servers:
            problems.append(
                (
                    (*here, "models", j),
                    f"{name} is a TensorRT-LLM engine, and the engine backend of Triton {stack.target.triton} "
                    f"(TensorRT-LLM {release.trtllm}) hard-codes the MPI cache transceiver: context and "
                    "generation must be ranks of one MPI world, so a prefill and a decode tritonserver cannot "
                    "move KV between them. Serve it from an aggregated pool with in_server_disaggregation: "
                    "true (both phases in one server), or set llm_api: true with checkpoint_dir on the model "
                    "(LLM-API path, UCX or NIXL cache transceiver) for separately scalable prefill and decode pools",
                )
            )
        if llm_api and not release.llmapi_cache_transceiver:
            problems.append(
                (
                    (*here, "models", j),
                    f"{name} uses the LLM-API model, whose cache transceiver on Triton {stack.target.triton} "
                    f"(TensorRT-LLM {release.trtllm}) has no backend setting to reach another server; use "
                    "Triton 25.06 or newer, or serve the engine (engine_dir) on this release "
                    "(TRTLLM_USE_UCX_KVCACHE=1 is rendered for it)",
                )
            )
    return problems


def load_spec(path: Path) -> Stack:
    """Read and validate a spec file; raise :class:`SpecError` listing every problem."""
    return spec_from_data(load_yaml(path))


def parse_spec(text: str, filename: str = "stack.yaml") -> Stack:
    return spec_from_data(parse_yaml(text, filename))


def spec_from_data(located: Located) -> Stack:
    data, source = located.data, located.source
    if not isinstance(data, dict):
        raise SpecError([f"{source.where(())}: the spec must be a mapping with apiVersion, name, models and pools"])
    version = data.get("apiVersion")
    if version != API_VERSION:
        got = "missing" if version is None else repr(version)
        raise SpecError([f"{source.where(('apiVersion',))}: apiVersion: {got}; this tool reads apiVersion: {API_VERSION}"])
    try:
        stack = Stack.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc, source)) from None
    problems = _cross_checks(stack)
    if problems:
        raise SpecError([f"{source.where(path)}: {format_path(path)}: {message}" for path, message in problems])
    return stack


def _describe(exc: ValidationError, source: SourceMap) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        lines.append(f"{source.where(loc)}: {format_path(loc)}: {_message(error)}")
    return lines


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the tried member's type (e.g. "int", "list[...]") to locations inside unions.
    return isinstance(part, str) and (part.endswith("]") or part in {"int", "str", "float", "bool", "none"})


def _message(error: ErrorDetails) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown field; check the spelling (tritonstack schema lists every field)"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"got {error['input']!r}: {message.lower()}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"got {type(error['input']).__name__} {error['input']!r}: {message.lower()}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if "input" in error else message


def json_schema() -> dict[str, Any]:
    schema = Stack.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tritonstack stack spec"
    return schema
