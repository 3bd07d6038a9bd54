"""What the real TensorRT-LLM backend refuses at load time, checked by the reference engine.

tritonstack's renderer writes ``backend_contract.json`` beside the engine's model.py (in every
``*_tensorrt_llm/1/``, ``*_context/1/``, ``*_generation/1/``), generated from the catalog in
``generator/contract/``. It holds, for the release era the repository targets:

* ``required_parameters``: ``[{"name", "source"}]``, the config.pbtxt keys the C++ backend reads with
  no fallback (a missing one fails the model load);
* ``parameters``: ``{name: {"format", "values", "unset_allowed"}}``, how the backend parses each key
  it reads (``unset_allowed``, optional: whether "" / ``${name}`` is taken as "not set" rather than
  parsed; default true, except for a required key of format bool/int/float/int_list/enum);
* ``response_order``: the order in which the backend attaches outputs to a response.
* ``flagged_outputs``: ``{input flag: [outputs]}``, the outputs attached only when a request sets
  that input true (``return_perf_metrics``, ``return_log_probs``, …).

The engine refuses to load a repository without that file (it was not rendered by tritonstack), and
refuses what the backend would refuse, with the backend's own message. Plain functions, no Triton
import: the unit tests call them with dicts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reference_lm import ReferenceEngineError

__all__ = [
    "CONTRACT_FILE",
    "BackendContract",
    "ParameterRule",
    "check_parameters",
    "parameter_values",
    "parse_backend_contract",
    "read_backend_contract",
]

CONTRACT_FILE = "backend_contract.json"

FORMATS = ("string", "path", "bool", "int", "float", "int_list", "enum")

# ModelState::GetParameter<bool> accepts exactly these spellings and throws "Cannot convert <v> to a
# boolean." for anything else:
# https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_state.cc#L310-L326
# https://github.com/NVIDIA/TensorRT-LLM/blob/main/triton_backend/inflight_batcher_llm/src/model_state.cc
# (same function in 1.x).
BOOL_TRUE = ("True", "true", "TRUE", "1")
BOOL_FALSE = ("False", "false", "FALSE", "0")

# The prefix ModelInstanceState::Create puts on every exception thrown while the instance is built:
# https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L43-L57
LOAD_ERROR_PREFIX = "unexpected error when creating modelInstanceState: "

# GetParameter<int32_t>/<float> are std::stoi/std::stof; we accept the plain spellings only (stoi
# would also take "12abc" as 12, which no renderer should write).
_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_LIST_SEPARATORS = re.compile(r"[,;{}\s]+")


@dataclass(frozen=True)
class ParameterRule:
    name: str
    format: str
    values: tuple[str, ...] = ()  # the accepted spellings, for format "enum"
    unset_allowed: bool | None = None  # None: the default rule (see check_parameters)


@dataclass(frozen=True)
class BackendContract:
    era: str
    required: tuple[tuple[str, str], ...]  # (name, upstream source URL), in the order the backend reads them
    rules: dict[str, ParameterRule] = field(default_factory=dict)
    response_order: tuple[str, ...] = ()
    flagged_outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)


def read_backend_contract(path: str) -> BackendContract:
    """Read ``backend_contract.json``; its absence means the repository was not rendered by tritonstack."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ReferenceEngineError(
            f"{path} is missing: this model repository was not rendered by tritonstack (its renderer writes "
            "the TensorRT-LLM backend's contract beside the reference engine's model.py); render it again"
        ) from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ReferenceEngineError(f"{path} is not valid JSON: {exc}") from None
    return parse_backend_contract(raw, where=os.path.basename(path))


def parse_backend_contract(raw: object, where: str = CONTRACT_FILE) -> BackendContract:
    """Validate the JSON the renderer wrote; every problem names the key."""
    if not isinstance(raw, Mapping):
        raise ReferenceEngineError(f"{where}: expected a JSON object")
    era = raw.get("era")
    if not isinstance(era, str) or not era:
        raise ReferenceEngineError(f"{where}: era must be a non-empty string")

    required = []
    entries = raw.get("required_parameters", [])
    if not isinstance(entries, list):
        raise ReferenceEngineError(f"{where}: required_parameters must be a list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ReferenceEngineError(f"{where}: required_parameters[{index}] needs a name")
        required.append((entry["name"], str(entry.get("source", ""))))

    rules = {}
    parameters = raw.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise ReferenceEngineError(f"{where}: parameters must be an object")
    for name, body in parameters.items():
        if not isinstance(body, Mapping) or body.get("format") not in FORMATS:
            found = body.get("format") if isinstance(body, Mapping) else body
            raise ReferenceEngineError(
                f"{where}: parameters.{name}.format is {found!r}; use one of {', '.join(FORMATS)}"
            )
        values = tuple(str(v) for v in body.get("values", ()) or ())
        if body["format"] == "enum" and not values:
            raise ReferenceEngineError(f"{where}: parameters.{name} is an enum without values")
        unset_allowed = body.get("unset_allowed")
        if unset_allowed is not None and not isinstance(unset_allowed, bool):
            raise ReferenceEngineError(f"{where}: parameters.{name}.unset_allowed must be true or false")
        rules[name] = ParameterRule(
            name=name, format=body["format"], values=values, unset_allowed=unset_allowed
        )

    order = raw.get("response_order", [])
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        raise ReferenceEngineError(f"{where}: response_order must be a list of output names")
    if "flagged_outputs" not in raw:
        raise ReferenceEngineError(f"{where}: flagged_outputs is missing (which outputs each input flag brings)")
    flagged = raw["flagged_outputs"]
    if not isinstance(flagged, Mapping) or not all(
        isinstance(names, list) and all(isinstance(n, str) for n in names) for names in flagged.values()
    ):
        raise ReferenceEngineError(f"{where}: flagged_outputs must map an input flag to a list of output names")
    return BackendContract(
        era=era,
        required=tuple(required),
        rules=rules,
        response_order=tuple(order),
        flagged_outputs={flag: tuple(names) for flag, names in flagged.items()},
    )


def parameter_values(model_config: Mapping) -> dict[str, str]:
    """config.pbtxt's ``parameters`` (Triton's JSON form) as name -> string_value, unstripped."""
    return {
        name: str((value or {}).get("string_value", ""))
        for name, value in (model_config.get("parameters") or {}).items()
    }


def is_unset(value: str) -> bool:
    """ "" and an unfilled ``${…}`` (what upstream's fill_template.py leaves) mean "not set" upstream,
    e.g. getGuidedDecodingConfigFromParams():
    https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L410-L425
    """
    return value == "" or (value.startswith("${") and value.endswith("}"))


def check_parameters(contract: BackendContract, model_config: Mapping) -> None:
    """Refuse the config.pbtxt parameters the real backend would refuse, with its messages.

    * A required key that is absent: ``GetParameter<std::string>`` throws ``Cannot find parameter with
      name: <key>`` and, being read outside any try/catch, it fails the instance (wrapped by
      ModelInstanceState::Create). model_state.cc:
      https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_state.cc#L249-L268
    * A required key present but unset passes for string/path keys (the backend tests for "" and
      ``${name}`` after reading) and for keys marked ``unset_allowed`` (guided_decoding_backend); any
      other required key must parse (gpt_model_type, for one: "Invalid gpt_model_type",
      model_instance_state.cc#L59-L79 of the same tag).
    * An optional key with a value the backend cannot parse: the backend logs a warning and uses its
      default (each read sits in try/catch). The reference engine refuses it instead, so a rendering
      mistake that a GPU node would silently ignore shows up on CPU; unset spellings stay allowed.
    """
    values = parameter_values(model_config)
    for name, source in contract.required:
        if name not in values:
            where = f" (the TensorRT-LLM backend reads it with no fallback: {source})" if source else ""
            raise ReferenceEngineError(f"{LOAD_ERROR_PREFIX}Cannot find parameter with name: {name}{where}")
    required = {name for name, _ in contract.required}
    for name, rule in contract.rules.items():
        if name not in values:
            continue
        value = values[name]
        if is_unset(value) and _unset_allowed(rule, required=name in required):
            continue
        if is_unset(value) and rule.format in ("string", "path"):
            # unset_allowed: false on a text key: the backend has no unset check for it and would use
            # "" or the literal ${…} as the value (a directory, a worker path).
            raise ReferenceEngineError(
                f"parameter {name}={value!r}: the TensorRT-LLM backend does not read this as unset and would "
                "use it as given; omit the key to leave it unset"
            )
        problem = _parse_problem(rule, value)
        if problem is None:
            continue
        if name in required:
            raise ReferenceEngineError(f"{LOAD_ERROR_PREFIX}{problem} (parameter {name})")
        raise ReferenceEngineError(
            f"parameter {name}={value!r}: {problem} The TensorRT-LLM backend would log a warning and use its "
            "default; the reference engine refuses the value so the mistake shows before a GPU node runs it"
        )


def _unset_allowed(rule: ParameterRule, required: bool) -> bool:
    if rule.unset_allowed is not None:
        return rule.unset_allowed
    # Optional keys: a failed parse falls back to the default upstream. Required text keys: read, then
    # tested for "" / ${…}. Required typed keys: parsed at once, so an unset spelling fails the load.
    return not required or rule.format in ("string", "path")


def _parse_problem(rule: ParameterRule, value: str) -> str | None:
    """Why the backend's parser rejects ``value``, or None when it parses."""
    if rule.format == "bool":
        if value in BOOL_TRUE or value in BOOL_FALSE:
            return None
        return f"Cannot convert {value} to a boolean. (accepted: {', '.join(BOOL_TRUE + BOOL_FALSE)})"
    if rule.format == "int":
        return None if _INT.fullmatch(value) else f"{value!r} is not an integer."
    if rule.format == "float":
        return None if _FLOAT.fullmatch(value) else f"{value!r} is not a number."
    if rule.format == "int_list":
        # utils::csvStrToVecInt / csvStrToVecVecInt: comma-separated ints, ';' between instances,
        # '{…}' groups; an empty list is an error there too.
        # https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/utils.cc#L474-L523
        items = [i for i in _LIST_SEPARATORS.split(value) if i]
        if items and all(_INT.fullmatch(i) for i in items):
            return None
        return f"{value!r} is not a comma-separated list of integers."
    if rule.format == "enum":
        if value in rule.values:
            return None
        return f"{value!r} is not one of {', '.join(rule.values)}."
    return None  # string, path: any text
