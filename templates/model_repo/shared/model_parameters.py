"""Read the ``parameters`` block of a python model's config.pbtxt, and the error a request can cause.

Triton hands every parameter over as a string. Like the upstream python models, a value that is empty
or still looks like an unfilled ``${placeholder}`` counts as unset (tensorrtllm_backend issue #469:
``Model '${tensorrt_llm_model_name}' is not ready``), so a default applies instead of a literal
``${...}`` leaking into behaviour. Our generator never leaves placeholders; hand-edited repositories
might.

Plain Python with no Triton import: copied into each python model's ``1/`` next to ``model.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ModelParameters", "RequestError", "bls_request_parameters", "load_tokenizer"]

_TRUE = {"true", "1", "t", "y", "yes", "on"}
_FALSE = {"false", "0", "f", "n", "no", "off"}


class RequestError(ValueError):
    """A request the model cannot serve; its message goes back to the client as the error response."""


class ModelParameters:
    """Typed access to the string parameters of one model config, naming the model in every error."""

    def __init__(self, model_config: Mapping[str, object], model_dir: str | None = None) -> None:
        self.model_name = str(model_config.get("name", "?"))
        self.model_dir = model_dir
        raw = model_config.get("parameters") or {}
        self._values: dict[str, str] = {}
        for key, value in dict(raw).items():  # type: ignore[arg-type]
            text = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
            text = text.strip()
            if text and not (text.startswith("${") and text.endswith("}")):
                self._values[key] = text

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ModelParameters:
        """From the ``args`` dict Triton passes to ``initialize``."""
        return cls(json.loads(args["model_config"]), args.get("model_repository"))

    def has(self, key: str) -> bool:
        return key in self._values

    def text(self, key: str, default: str | None = None) -> str:
        if key in self._values:
            return self._values[key]
        if default is None:
            raise ValueError(f"model '{self.model_name}': parameter '{key}' is required in config.pbtxt")
        return default

    def path(self, key: str) -> str:
        """A path parameter; a relative one is relative to this model's directory (tritonstack
        writes paths that way so a rendered repository can move with its checkout)."""
        value = self.text(key)
        if self.model_dir and not Path(value).is_absolute():
            return str((Path(self.model_dir) / value).resolve())
        return value

    def flag(self, key: str, default: bool) -> bool:
        if key not in self._values:
            return default
        value = self._values[key].lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"model '{self.model_name}': parameter '{key}' must be true or false, got '{value}'")

    def integer(self, key: str, default: int, minimum: int | None = None) -> int:
        if key not in self._values:
            return default
        try:
            value = int(self._values[key])
        except ValueError:
            raise ValueError(
                f"model '{self.model_name}': parameter '{key}' must be an integer, got '{self._values[key]}'"
            ) from None
        if minimum is not None and value < minimum:
            raise ValueError(
                f"model '{self.model_name}': parameter '{key}' must be at least {minimum}, got {value}"
            )
        return value

    def number(self, key: str, default: float, minimum: float | None = None) -> float:
        if key not in self._values:
            return default
        try:
            value = float(self._values[key])
        except ValueError:
            raise ValueError(
                f"model '{self.model_name}': parameter '{key}' must be a number, got '{self._values[key]}'"
            ) from None
        if minimum is not None and value < minimum:
            raise ValueError(
                f"model '{self.model_name}': parameter '{key}' must be at least {minimum}, got {value}"
            )
        return value


def bls_request_parameters(parameters_json: str) -> dict[str, bool | int | str]:
    """A client request's parameters (Triton's JSON) in the types a BLS request accepts (bool, int, str).

    Triton's python backend rejects float parameter values in ``pb_utils.InferenceRequest`` ("Expect
    parameters values to have type bool/int/str"), so a float travels on as its decimal string and
    anything else as JSON.
    """
    passed: dict[str, bool | int | str] = {}
    for key, value in json.loads(parameters_json or "{}").items():
        if isinstance(value, (bool, int, str)):
            passed[key] = value
        elif isinstance(value, float):
            passed[key] = repr(value)
        else:
            passed[key] = json.dumps(value)
    return passed


def load_tokenizer(tokenizer_dir: str, model_name: str):  # -> transformers.PreTrainedTokenizerBase
    """Load a Hugging Face tokenizer from a local directory, never from the hub.

    ``local_files_only`` keeps a typo in ``tokenizer_dir`` from turning into a download attempt (a
    serving node usually has no internet; a hub id here is a configuration mistake).
    """
    from transformers import AutoTokenizer

    path = Path(tokenizer_dir)
    if not path.is_dir():
        raise ValueError(
            f"model '{model_name}': tokenizer_dir '{tokenizer_dir}' is not a directory on this node; "
            "point models[].tokenizer_dir at a Hugging Face tokenizer directory"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, padding_side="left")
    except Exception as error:  # transformers raises OSError, ValueError, KeyError... translate them all here
        raise ValueError(
            f"model '{model_name}': cannot load the tokenizer in '{tokenizer_dir}': {error}"
        ) from error
    if tokenizer.pad_token is None:
        # Llama-style tokenizers have no pad token; padding with eos is what the upstream models do.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
