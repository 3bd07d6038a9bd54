"""The real TensorRT-LLM backend's contract, one catalog per release era.

``catalog/trtllm-<era>.yaml`` holds what upstream's source enforces, each entry with the upstream
file (and line) it was read from: every ``config.pbtxt`` parameter the C++ ``tensorrtllm`` backend
and the python models read, whether a missing key fails the load, its value format and default; and
every tensor of ``tensorrt_llm``, ``preprocessing``, ``postprocessing``, ``ensemble`` and
``tensorrt_llm_bls`` as upstream declares it. The renderer writes to it, the validator checks
rendered configs against it, and the reference engine refuses what it says the real backend refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

__all__ = [
    "BackendContract",
    "ModelContract",
    "ParameterContract",
    "TensorContract",
    "load_contract",
    "is_unset",
    "REFERENCE_CONTRACT_FILE",
    "reference_engine_contract",
]

# Written beside the reference engine's model.py: what it must refuse and how it must answer.
REFERENCE_CONTRACT_FILE = "backend_contract.json"

Era = Literal["0.19", "1.x"]
ModelKind = Literal["tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "tensorrt_llm_bls"]
ParameterFormat = Literal["string", "path", "bool", "int", "float", "int_list", "enum"]


@dataclass(frozen=True)
class ParameterContract:
    """One ``parameters { key: … }`` entry as the backend reads it."""

    name: str
    required: bool  # read with no fallback: a missing key fails the model load
    format: ParameterFormat
    source: str  # upstream URL (with line) of the read that decides it
    values: tuple[str, ...] = ()  # the accepted spellings, for format "enum"
    default: str | None = None  # what the backend uses when the key is absent or unset
    note: str = ""
    # Whether "" / ``${name}`` is read as "not set" (true), used as the value itself (false), or, when
    # None, fails to parse inside the backend's try/catch, which also means "default".
    unset_allowed: bool | None = None

    def unset_spellings(self) -> tuple[str, ...]:
        """Values the backend takes as "not set": empty, or the placeholder fill_template leaves."""
        return ("", "${" + self.name + "}")


@dataclass(frozen=True)
class TensorContract:
    name: str
    data_type: str  # TYPE_* or "${placeholder}" (see BackendContract.placeholders)
    dims: tuple[int, ...]
    optional: bool = False
    reshape: bool = False  # reshape: { shape: [ ] }
    ragged: bool = False  # allow_ragged_batch: true


@dataclass(frozen=True)
class ModelContract:
    kind: str
    source: str  # upstream config.pbtxt
    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]
    parameters: tuple[ParameterContract, ...] = ()
    # For tensorrt_llm: the order in which the backend attaches outputs to a response, and, for each
    # output not sent every time, the condition under which it is attached.
    response_order: tuple[str, ...] = ()
    response_order_source: str = ""
    response_conditions: dict[str, str] = field(default_factory=dict)
    # input flag → the outputs attached only when a request sets it true (e.g. return_perf_metrics)
    flagged_outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def input(self, name: str) -> TensorContract | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorContract | None:
        return next((t for t in self.outputs if t.name == name), None)

    def parameter(self, name: str) -> ParameterContract | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def required_parameters(self) -> tuple[ParameterContract, ...]:
        return tuple(p for p in self.parameters if p.required)


@dataclass(frozen=True)
class BackendContract:
    era: str
    description: str
    # Data types upstream leaves as ${placeholder}: the TYPE_* values each may be filled with.
    placeholders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    models: dict[str, ModelContract] = field(default_factory=dict)
    facts: tuple[dict[str, str], ...] = ()  # behaviour beside the config ({fact, source})

    def model(self, kind: str) -> ModelContract:
        return self.models[kind]

    def accepts_type(self, declared: str, rendered: str) -> bool:
        """Whether a rendered TYPE_* satisfies the contract's data type (a TYPE_* or a placeholder)."""
        if declared.startswith("${") and declared.endswith("}"):
            return rendered in self.placeholders.get(declared[2:-1], ())
        return declared == rendered


def is_unset(value: str, name: str) -> bool:
    """Upstream treats an empty string and the unfilled ``${name}`` (any ``${…}``) as "not set"."""
    return value == "" or (value.startswith("${") and value.endswith("}"))


@cache
def load_contract(era: str) -> BackendContract:
    """The catalog of one release era (``"0.19"`` for Triton 25.05, ``"1.x"`` for 25.06–26.07)."""
    text = resources.files("generator.contract").joinpath(f"catalog/trtllm-{era}.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    models = {kind: _model(kind, body) for kind, body in raw["models"].items()}
    placeholders = {name: tuple(types) for name, types in (raw.get("placeholders") or {}).items()}
    return BackendContract(
        era=str(raw["era"]),
        description=raw["description"],
        placeholders=placeholders,
        models=models,
        facts=tuple(raw.get("facts") or ()),
    )


def _model(kind: str, body: dict[str, Any]) -> ModelContract:
    return ModelContract(
        kind=kind,
        source=body["source"],
        inputs=tuple(_tensor(t) for t in body.get("inputs", ())),
        outputs=tuple(_tensor(t) for t in body.get("outputs", ())),
        parameters=tuple(_parameter(p) for p in body.get("parameters", ())),
        response_order=tuple(body.get("response_order", ())),
        response_order_source=body.get("response_order_source", ""),
        response_conditions=dict(body.get("response_conditions") or {}),
        flagged_outputs={flag: tuple(names) for flag, names in (body.get("flagged_outputs") or {}).items()},
    )


def _tensor(raw: dict[str, Any]) -> TensorContract:
    return TensorContract(
        name=raw["name"],
        data_type=raw["data_type"],
        dims=tuple(raw["dims"]),
        optional=bool(raw.get("optional", False)),
        reshape=bool(raw.get("reshape", False)),
        ragged=bool(raw.get("ragged", False)),
    )


def _parameter(raw: dict[str, Any]) -> ParameterContract:
    return ParameterContract(
        name=raw["name"],
        required=bool(raw["required"]),
        format=raw["format"],
        source=raw["source"],
        values=tuple(str(v) for v in raw.get("values", ())),
        default=None if raw.get("default") is None else str(raw["default"]),
        note=raw.get("note", ""),
        unset_allowed=raw.get("unset_allowed"),
    )


def reference_engine_contract(era: str) -> bytes:
    """The part of the ``tensorrt_llm`` contract the CPU reference engine enforces at load and answer
    time: the parameters the real backend cannot load without, how each parameter's value must parse,
    and the order of outputs in a response. Deterministic JSON (sorted keys)."""
    engine = load_contract(era).model("tensorrt_llm")
    document = {
        "era": era,
        "required_parameters": [{"name": p.name, "source": p.source} for p in engine.required_parameters],
        "parameters": {
            p.name: {
                "format": p.format,
                **({"values": list(p.values)} if p.values else {}),
                **({"unset_allowed": p.unset_allowed} if p.unset_allowed is not None else {}),
            }
            for p in engine.parameters
        },
        "response_order": list(engine.response_order),
        "flagged_outputs": {flag: list(names) for flag, names in engine.flagged_outputs.items()},
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
