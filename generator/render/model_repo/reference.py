"""Turn any spec into one that runs on this machine's CPU with the reference engine.

``--reference-engine`` swaps every TensorRT-LLM engine for the reference engine (same tensor
contract, python backend) and drops GPU placement. A tokenizer directory that does not exist here
(specs name paths on the serving node) is replaced by the bundled tiny-chat tokenizer, and the
caller is told so.
"""

from __future__ import annotations

import os
from pathlib import Path

from generator.resources import BUNDLED_TOKENIZER
from generator.spec import Model, ReferenceEngine, Stack

__all__ = ["as_reference_engine"]


def as_reference_engine(stack: Stack, spec_dir: Path) -> tuple[Stack, list[str]]:
    notes: list[str] = []
    models: list[Model] = []
    for model in stack.models:
        update: dict[str, object] = {"gpu_ids": None}
        if model.reference_engine is None:
            update |= {"engine_dir": None, "reference_engine": ReferenceEngine()}
            notes.append(f"{model.name}: engine {model.engine_dir} replaced by the CPU reference engine")
        tokenizer = Path(model.tokenizer_dir)
        if not tokenizer.is_absolute():
            tokenizer = spec_dir / tokenizer
        if not (tokenizer / "tokenizer.json").is_file() and not (tokenizer / "tokenizer.model").is_file():
            update["tokenizer_dir"] = os.path.relpath(BUNDLED_TOKENIZER, spec_dir.absolute())
            notes.append(f"{model.name}: tokenizer {model.tokenizer_dir} not found here; using the bundled tiny-chat")
        models.append(model.model_copy(update=update))
    return stack.model_copy(update={"models": models}), notes
