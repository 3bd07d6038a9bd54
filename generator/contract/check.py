"""Hold a parsed ``config.pbtxt`` against the backend contract of its release era.

A rendered (or served) model fails when it lacks a parameter the real backend cannot load without,
carries a value the backend would misread or silently ignore, or declares one of upstream's tensors
differently from upstream (name, type, dims, optional, reshape, ragged). Each problem names the file,
the key and what upstream expects, with the upstream source that decides it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tritonclient.grpc import model_config_pb2
from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInput, ModelOutput

from generator.contract import BackendContract, ModelContract, ParameterContract, TensorContract, is_unset

__all__ = ["BOOL_SPELLINGS", "contract_kind", "check_against_contract"]

# The spellings the C++ backend's bool parameter parser accepts; anything else throws, and inside the
# backend's try/catch that means "use the default" without a word.
# https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_state.cc#L310-L325
BOOL_SPELLINGS = ("true", "false", "True", "False", "TRUE", "FALSE", "1", "0")

# Triton model name suffix → upstream model kind (see generator/naming.py for how names are made).
_KIND_BY_SUFFIX = {
    "tensorrt_llm": "tensorrt_llm",
    "context": "tensorrt_llm",
    "generation": "tensorrt_llm",
    "preprocessing": "preprocessing",
    "postprocessing": "postprocessing",
    "ensemble": "ensemble",
    "prefill": "ensemble",
    "decode": "ensemble",
    "bls": "tensorrt_llm_bls",
}


def contract_kind(model_name: str) -> str | None:
    """The upstream model kind a tritonstack model name stands for; None for models of our own with no
    upstream counterpart (the disaggregated-serving BLS, the LLM-API model)."""
    suffix = model_name.split("_", 1)[1] if "_" in model_name else ""
    return _KIND_BY_SUFFIX.get(suffix)


def check_against_contract(path: str, config: ModelConfig, kind: str, contract: BackendContract) -> list[str]:
    model = contract.model(kind)
    problems = _check_tensors(path, "input", list(config.input), model.inputs, model, contract)
    problems += _check_tensors(path, "output", list(config.output), model.outputs, model, contract)
    if kind == "tensorrt_llm":
        problems += _check_parameters(path, config, model)
    return problems


def _check_parameters(path: str, config: ModelConfig, model: ModelContract) -> list[str]:
    problems: list[str] = []
    for parameter in model.parameters:
        if parameter.name not in config.parameters:
            if parameter.required:
                problems.append(
                    f"{path}: parameter {parameter.name!r} is missing; the TensorRT-LLM backend reads it with no "
                    f"fallback and refuses to load (\"Cannot find parameter with name: {parameter.name}\", "
                    f"{parameter.source}); write it (an empty value means unset)"
                )
            continue
        value = config.parameters[parameter.name].string_value
        problem = _value_problem(parameter, value)
        if problem:
            problems.append(f"{path}: parameter {parameter.name!r} = {value!r}: {problem} ({parameter.source})")
    return problems


def _value_problem(parameter: ParameterContract, value: str) -> str | None:
    if is_unset(value, parameter.name):
        if parameter.unset_allowed is False:
            return "the backend takes this value literally (it has no 'unset' spelling); leave the key out instead"
        if parameter.required and parameter.unset_allowed is None:
            return "the backend must parse this key at load and an unset value fails the load"
        return None
    if parameter.format == "bool" and value not in BOOL_SPELLINGS:
        return f"the backend parses only {', '.join(BOOL_SPELLINGS)} as a bool; anything else falls back silently"
    if parameter.format == "int" and not _parses(int, value):
        return "the backend expects an integer; anything else falls back silently"
    if parameter.format == "float" and not _parses(float, value):
        return "the backend expects a number; anything else falls back silently"
    if parameter.format == "int_list" and not all(_parses(int, v) for v in value.replace(";", ",").split(",")):
        return "the backend expects comma-separated integers (';' between instances)"
    if parameter.format == "enum" and parameter.values and value not in parameter.values:
        return f"the backend accepts only {', '.join(parameter.values)} and ignores anything else"
    return None


def _parses(kind: type, value: str) -> bool:
    try:
        kind(value.strip())
    except ValueError:
        return False
    return True


def _check_tensors(
    path: str,
    kind: str,
    declared: Sequence[ModelInput | ModelOutput],
    expected: tuple[TensorContract, ...],
    model: ModelContract,
    contract: BackendContract,
) -> list[str]:
    problems: list[str] = []
    by_name = {t.name: t for t in declared}
    for tensor in expected:
        found = by_name.get(tensor.name)
        if found is None:
            what = "optional " if tensor.optional else ""
            problems.append(
                f"{path}: {kind} {tensor.name!r} is not declared; upstream {model.kind} declares it "
                f"({what}{tensor.data_type} {list(tensor.dims)}, {model.source}), and clients that send or "
                "ask for it are refused"
            )
            continue
        problems += [f"{path}: {kind} {tensor.name!r}: {p}" for p in _tensor_differences(found, tensor, kind, contract)]
    if kind == "input":
        upstream = {t.name for t in expected}
        for tensor in declared:
            if tensor.name not in upstream and not tensor.optional:
                problems.append(
                    f"{path}: input {tensor.name!r} is ours, not upstream's, so it must be optional "
                    "(clients written for upstream never send it)"
                )
    return problems


def _tensor_differences(found: ModelInput | ModelOutput, tensor: TensorContract, kind: str, contract: BackendContract) -> list[str]:
    differences: list[str] = []
    data_type = model_config_pb2.DataType.Name(found.data_type)
    if not contract.accepts_type(tensor.data_type, data_type):
        differences.append(f"data_type is {data_type}, upstream declares {tensor.data_type}")
    if tuple(found.dims) != tensor.dims:
        differences.append(f"dims are {list(found.dims)}, upstream declares {list(tensor.dims)}")
    if kind == "input":
        if found.optional != tensor.optional:
            differences.append(f"optional is {str(found.optional).lower()}, upstream declares {str(tensor.optional).lower()}")
        reshaped = found.HasField("reshape") and len(found.reshape.shape) == 0
        if reshaped != tensor.reshape:
            differences.append("reshape: { shape: [ ] } " + ("is missing" if tensor.reshape else "is not upstream's"))
        if found.allow_ragged_batch != tensor.ragged:
            differences.append(f"allow_ragged_batch is {str(found.allow_ragged_batch).lower()}, upstream's is {str(tensor.ragged).lower()}")
    return differences
