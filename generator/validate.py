"""Check rendered repositories before anything runs.

Every ``config.pbtxt`` must parse into Triton's ``ModelConfig`` protobuf, must satisfy the backend
contract of its release era (``generator/contract/``: parameters the real backend cannot load
without, values it would misread, upstream's tensors as upstream declares them), and the models of one
repository must fit together the way Triton and the TRT-LLM backend demand at load or request time:
ensemble steps exist and agree on tensor names and types, ``max_batch_size`` of an ensemble is at
most each step's, a decoupled BLS needs a decoupled tensorrt_llm. (Whether a client may ask a
non-decoupled engine to stream is the backend's call at request time, as upstream's ensemble wires
``stream`` to ``streaming`` for every model.)
Problems are collected, each naming the model, the field and the fix.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.contract import load_contract
from generator.contract.check import check_against_contract, contract_kind
from generator.errors import ValidationFailure
from generator.spec import Stack, uses_llm_api

__all__ = ["parse_configs", "validate_repositories"]

ModelConfig = model_config_pb2.ModelConfig


@dataclass(frozen=True)
class ParsedModel:
    repo: str
    path: str
    config: ModelConfig


def parse_configs(files: dict[str, bytes]) -> tuple[dict[str, dict[str, ParsedModel]], list[str]]:
    """Parse every ``model_repos/<pool>/<model>/config.pbtxt`` → {repo: {model: parsed}}."""
    repos: dict[str, dict[str, ParsedModel]] = defaultdict(dict)
    problems: list[str] = []
    for path, data in files.items():
        parts = PurePosixPath(path).parts
        if len(parts) != 4 or parts[0] != "model_repos" or parts[3] != "config.pbtxt":
            continue
        repo, model = parts[1], parts[2]
        config = ModelConfig()
        try:
            text_format.Parse(data.decode("utf-8"), config)
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: does not parse as a Triton ModelConfig: {exc}")
            continue
        if config.name != model:
            problems.append(f"{path}: name {config.name!r} differs from its directory {model!r}")
        repos[repo][model] = ParsedModel(repo, path, config)
    return dict(repos), problems


def validate_repositories(files: dict[str, bytes], stack: Stack) -> None:
    """Raise :class:`ValidationFailure` listing every problem found."""
    repos, problems = parse_configs(files)
    contract = load_contract(stack.target.release.tensor_names)
    for _repo, models in sorted(repos.items()):
        for parsed in models.values():
            problems += _check_model(parsed, models)
            kind = contract_kind(parsed.config.name)
            if kind is not None:
                problems += check_against_contract(parsed.path, parsed.config, kind, contract)
    problems += _check_pairs(stack, repos)
    if problems:
        raise ValidationFailure(problems)


def _io(config: ModelConfig) -> tuple[dict[str, model_config_pb2.ModelInput], dict[str, model_config_pb2.ModelOutput]]:
    return {t.name: t for t in config.input}, {t.name: t for t in config.output}


def _check_model(parsed: ParsedModel, models: dict[str, ParsedModel]) -> list[str]:
    config, where = parsed.config, f"{parsed.repo}/{parsed.config.name}"
    problems: list[str] = []
    for kind, declared in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in declared:
            if tensor.name in seen:
                problems.append(f"{where}: {kind} {tensor.name!r} is declared twice; declare each tensor once")
            seen.add(tensor.name)
    if config.platform == "ensemble":
        problems += _check_ensemble(where, config, models)
    elif _parameter(config, "context_model_name") is not None:
        problems += _check_disaggregated_bls(where, config, models)
    elif _parameter(config, "tensorrt_llm_model_name") is not None:
        llm_name = _parameter(config, "tensorrt_llm_model_name")
        llm = models.get(llm_name or "")
        if llm is None:
            problems.append(f"{where}: parameters.tensorrt_llm_model_name {llm_name!r} is not in this repository")
        elif config.model_transaction_policy.decoupled and not llm.config.model_transaction_policy.decoupled:
            problems.append(
                f"{where}: model_transaction_policy.decoupled is true but {llm_name} is not decoupled; "
                "a streaming BLS needs a decoupled tensorrt_llm (set streaming: true on the model)"
            )
        for key in ("preprocessing_model_name", "postprocessing_model_name"):
            name = _parameter(config, key)
            if name not in models:
                problems.append(f"{where}: parameters.{key} {name!r} is not in this repository")
    return problems


def _check_disaggregated_bls(where: str, config: ModelConfig, models: dict[str, ParsedModel]) -> list[str]:
    """In-server disaggregation: both engine copies exist, the streaming one is decoupled, and
    their MPI participants do not overlap (TensorRT-LLM orchestrator mode)."""
    problems: list[str] = []
    phases = {}
    for key in ("context_model_name", "generation_model_name"):
        name = _parameter(config, key) or ""
        if name not in models:
            problems.append(f"{where}: parameters.{key} {name!r} is not in this repository")
        else:
            phases[key] = models[name].config
    generation = phases.get("generation_model_name")
    if generation is not None and config.model_transaction_policy.decoupled:
        if not generation.model_transaction_policy.decoupled:
            problems.append(f"{where}: streams, but {generation.name} is not decoupled; set streaming: true")
    if len(phases) == 2:
        ids = [set((_parameter(c, "participant_ids") or "").replace(";", ",").split(",")) - {""} for c in phases.values()]
        if ids[0] & ids[1]:
            problems.append(
                f"{where}: context and generation share participant_ids {sorted(ids[0] & ids[1])}; "
                "each MPI rank serves one of them"
            )
    return problems


def _check_ensemble(where: str, config: ModelConfig, models: dict[str, ParsedModel]) -> list[str]:
    problems: list[str] = []
    ens_inputs, ens_outputs = _io(config)
    # Every tensor flowing through the ensemble, with its type: ensemble inputs, then step outputs.
    # A step whose model is missing still "produces" its mapped outputs (type unknown: None), so one
    # missing model gives one problem rather than one per downstream tensor.
    produced: dict[str, int | None] = {name: t.data_type for name, t in ens_inputs.items()}
    for index, step in enumerate(config.ensemble_scheduling.step):
        step_where = f"{where}: ensemble_scheduling.step[{index}] ({step.model_name})"
        target = models.get(step.model_name)
        if target is None:
            problems.append(f"{step_where}: model {step.model_name!r} is not in this repository")
            produced.update(dict.fromkeys(step.output_map.values()))
            continue
        if config.max_batch_size > target.config.max_batch_size:
            problems.append(
                f"{step_where}: ensemble max_batch_size {config.max_batch_size} exceeds the step's "
                f"{target.config.max_batch_size}; lower the ensemble's or raise the step's"
            )
        step_inputs, step_outputs = _io(target.config)
        for key, value in step.input_map.items():
            model_input = step_inputs.get(key)
            if model_input is None:
                problems.append(f"{step_where}: input_map key {key!r} is not an input of {step.model_name}")
            elif value not in produced:
                problems.append(f"{step_where}: input_map value {value!r} is produced by no earlier step or input")
            elif produced[value] not in (None, model_input.data_type):
                problems.append(
                    f"{step_where}: {value!r} is {_type_name(produced[value])} but {step.model_name}.{key} "
                    f"expects {_type_name(model_input.data_type)}"
                )
        for name, model_input in step_inputs.items():
            if not model_input.optional and name not in step.input_map:
                problems.append(f"{step_where}: required input {name!r} of {step.model_name} is not mapped")
        for key, value in step.output_map.items():
            model_output = step_outputs.get(key)
            if model_output is None:
                problems.append(f"{step_where}: output_map key {key!r} is not an output of {step.model_name}")
                continue
            produced[value] = model_output.data_type
    for name, tensor in ens_outputs.items():
        if name not in produced:
            problems.append(f"{where}: ensemble output {name!r} is produced by no step")
        elif produced[name] not in (None, tensor.data_type):
            problems.append(
                f"{where}: ensemble output {name!r} is declared {_type_name(tensor.data_type)} but its step "
                f"produces {_type_name(produced[name])}"
            )
    return problems


def _check_pairs(stack: Stack, repos: dict[str, dict[str, ParsedModel]]) -> list[str]:
    """A prefill pool's context copy and its decode pool's generation copy must agree."""
    problems: list[str] = []
    for pool in stack.pools:
        if pool.role != "prefill":
            continue
        partner = stack.partner_of(pool)
        if partner is None:
            continue
        for model in pool.models:
            if uses_llm_api(stack, stack.model(model)):
                continue  # one <m>_llmapi model on each side (render/model_repo/llmapi.py), no engine copies to compare
            context = repos.get(pool.name, {}).get(f"{model}_context")
            generation = repos.get(partner.name, {}).get(f"{model}_generation")
            if context is None or generation is None:
                problems.append(f"{pool.name}/{partner.name}: {model} lacks its context or generation model")
                continue
            if _io(context.config)[0].keys() != _io(generation.config)[0].keys():
                problems.append(
                    f"{pool.name}/{model}_context and {partner.name}/{model}_generation declare different inputs; "
                    "both halves must come from the same TensorRT-LLM release"
                )
    return problems


def _parameter(config: ModelConfig, key: str) -> str | None:
    if key in config.parameters:
        return config.parameters[key].string_value
    return None


def _type_name(data_type: int | None) -> str:
    return model_config_pb2.DataType.Name(data_type)
