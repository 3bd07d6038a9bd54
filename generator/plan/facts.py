"""Model facts: the architecture numbers the planner needs, from the files operators have.

Three sources, in this order of trust:

1. a TensorRT-LLM engine directory's ``config.json`` (what was really built: build limits, dtype,
   quantization, TP/PP, plugin switches);
2. a Hugging Face checkpoint's ``config.json`` plus ModelOpt's ``hf_quant_config.json``;
3. values written in the spec (:class:`ModelFacts`) when no files are readable where the generator runs.

Readers translate every foreign problem (missing file, bad JSON, missing key) into :class:`FactsError`
naming the file and the key. Layer composition is read, not assumed: ``layer_types``,
``block_configs`` (NAS-pruned models) and ``hybrid_override_pattern`` (Mamba hybrids) decide which
layers hold a KV cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from generator.errors import TritonstackError
from generator.spec.model_facts import ModelFacts, QuantFacts

__all__ = [
    "FactsError",
    "EngineFacts",
    "read_hf_config",
    "read_hf_quant_config",
    "read_engine_config",
    "read_checkpoint_dir",
    "read_engine_dir",
]


class FactsError(TritonstackError):
    """A model file is missing, unreadable, or lacks a number the planner needs."""


@dataclass(frozen=True)
class EngineFacts:
    """What a built TensorRT-LLM engine directory says about itself."""

    path: str
    trtllm_version: str | None
    model: ModelFacts
    dtype: str
    tensor_parallel: int
    pipeline_parallel: int
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int | None
    max_beam_width: int
    paged_kv_cache: bool
    tokens_per_block: int | None
    paged_context_fmha: bool
    fp8_context_fmha: bool
    gemm_plugin: str | None
    quantization: QuantFacts = field(default_factory=QuantFacts)


# ---------------------------------------------------------------------------------------------
# Reading files


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FactsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FactsError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FactsError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise FactsError(f"{path}: expected a JSON object at the top level")
    return data


class _Keys:
    """Typed access to one JSON object, with errors that name the file and key."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def has(self, *names: str) -> bool:
        return any(self.data.get(n) is not None for n in names)

    def integer(self, *names: str, default: int | None = None) -> int:
        for name in names:
            value = self.data.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise FactsError(f"{self.where}: {name}: expected an integer, got {value!r}")
                return value
        if default is None:
            raise FactsError(f"{self.where}: missing {' / '.join(names)}; the planner needs it")
        return default

    def positive(self, *names: str) -> int:
        """An integer that must be at least 1 (a count the planner divides by)."""
        value = self.integer(*names)
        if value <= 0:
            name = next(n for n in names if self.data.get(n) is not None)
            raise FactsError(f"{self.where}: {name}: expected a positive integer, got {value}; fix the config")
        return value

    def optional_integer(self, *names: str) -> int | None:
        return self.integer(*names, default=-1) if self.has(*names) else None

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.data.get(name)
        return value if isinstance(value, str) else default

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, str):  # older plugin configs write "enable"/"disable"
            return value.lower() in {"enable", "true", "1"}
        return bool(value)


def _facts(where: str, **values: Any) -> ModelFacts:
    try:
        return ModelFacts(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'facts'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise FactsError(f"{where}: inconsistent model facts: {problems}") from None


def _quant(where: str, values: dict[str, Any]) -> QuantFacts:
    try:
        return QuantFacts(**values)
    except ValidationError as exc:
        raise FactsError(f"{where}: quantization: {exc.errors(include_url=False)[0]['msg']}") from None


def read_hf_quant_config(path: Path) -> QuantFacts:
    """ModelOpt's ``hf_quant_config.json``: ``{"producer": ..., "quantization": {quant_algo, ...}}``."""
    data = _load_json(path)
    section = data.get("quantization", data)
    if not isinstance(section, dict):
        raise FactsError(f"{path}: quantization: expected an object")
    exclude = _module_list(section, ("exclude_modules",), f"{path}: quantization")
    algo = section.get("quant_algo")
    if algo is not None and not isinstance(algo, str):
        raise FactsError(f"{path}: quantization.quant_algo: expected a name such as FP8 or NVFP4, got {algo!r}")
    group = section.get("group_size")
    return _quant(
        str(path),
        {
            "quant_algo": section.get("quant_algo"),
            "group_size": group if isinstance(group, int) and group > 0 else None,
            "kv_cache_quant_algo": section.get("kv_cache_quant_algo"),
            "exclude_modules": exclude,
        },
    )


def _quant_from_hf_config(cfg: dict[str, Any], where: str) -> QuantFacts | None:
    """``quantization_config`` inside config.json (e.g. GPT-OSS ``quant_method: mxfp4``)."""
    qc = cfg.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "")).lower()
    algo = qc.get("quant_algo")
    if method == "mxfp4":
        algo = "MXFP4"
    elif method == "fp8" and algo is None:
        algo = "FP8"
    elif method == "awq" and algo is None:
        # AutoAWQ checkpoints: 4-bit weights in groups (group_size, usually 128), FP16 activations.
        algo = "W4A16_AWQ"
    elif algo is None and method:
        # Any other method (gptq, bitsandbytes, compressed-tensors, ...) is carried as its name so the
        # planner can say it does not model it, instead of silently planning BF16.
        algo = method.upper()
    if algo is None:
        return None
    if not isinstance(algo, str):
        raise FactsError(f"{where}: quantization_config.quant_algo: expected a name such as FP8, got {algo!r}")
    exclude = _module_list(qc, ("modules_to_not_convert", "ignore", "exclude_modules"), f"{where}: quantization_config")
    return _quant(
        where,
        {
            "quant_algo": algo,
            "kv_cache_quant_algo": qc.get("kv_cache_quant_algo"),
            "exclude_modules": exclude,
        },
    )


def _module_list(section: dict[str, Any], names: tuple[str, ...], where: str) -> list[str]:
    """A list of module name patterns; one string is one pattern (not a list of its characters)."""
    for name in names:
        value = section.get(name)
        if value is None or value == []:
            continue
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return list(value)
        raise FactsError(
            f"{where}.{name}: expected a module name pattern or a list of them, got {value!r}; "
            'write e.g. ["lm_head"]'
        )
    return []


def _find_multiple(value: int, multiple: int) -> int:
    return value if value % multiple == 0 else value + multiple - value % multiple


def _layer_composition(cfg: _Keys, num_layers: int, hidden: int, heads: int) -> dict[str, Any]:
    """Which layers have attention / sliding windows / MLPs, from whichever description is present."""
    out: dict[str, Any] = {}
    data = cfg.data
    layer_types = data.get("layer_types")
    window = data.get("sliding_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise FactsError(
            f"{cfg.where}: sliding_window: expected a positive integer (tokens), got {window!r}; "
            "write the window as a number, or null when the model has none"
        )
    if isinstance(layer_types, list) and layer_types:
        attention_kinds = {"full_attention", "sliding_attention", "attention", "chunked_attention"}
        out["attention_layers"] = sum(1 for t in layer_types if t in attention_kinds)
        sliding = sum(1 for t in layer_types if t == "sliding_attention")
        if sliding:
            if not isinstance(window, int):
                raise FactsError(f"{cfg.where}: layer_types has sliding_attention layers but no sliding_window")
            out["sliding_window"], out["sliding_window_layers"] = window, sliding
    elif isinstance(window, int) and data.get("use_sliding_window", True) is not False:
        # Mistral-style: one window for every layer (Qwen2/3 carry a window but switch it off).
        out["sliding_window"], out["sliding_window_layers"] = window, num_layers

    blocks = data.get("block_configs")
    if blocks is not None and not isinstance(blocks, list):
        raise FactsError(f"{cfg.where}: block_configs: expected a list with one object per layer, got {blocks!r}")
    if isinstance(blocks, list) and blocks:
        out.update(_nas_blocks(blocks, cfg.where, hidden, heads))

    pattern = data.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        out.update(_hybrid_pattern(pattern, cfg, hidden))
    return out


def _nas_blocks(blocks: list[Any], where: str, hidden: int, heads: int) -> dict[str, Any]:
    """DeciLM / Nemotron-NAS ``block_configs``: some blocks skip attention or shrink their FFN."""
    attention_layers, mlp_params, kv_heads = 0, 0, 0
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise FactsError(
                f"{where}: block_configs[{i}]: expected an object with attention and ffn, got {block!r}"
            )
        attn, ffn = block.get("attention") or {}, block.get("ffn") or {}
        for part, value in (("attention", attn), ("ffn", ffn)):
            if not isinstance(value, dict):
                raise FactsError(f"{where}: block_configs[{i}].{part}: expected an object, got {value!r}")
        if not attn.get("no_op") and not attn.get("replace_with_linear"):
            attention_layers += 1
            group = attn.get("n_heads_in_group")
            if not isinstance(group, int) or group <= 0:
                raise FactsError(f"{where}: block_configs[{i}].attention.n_heads_in_group: expected an integer")
            kv_heads = max(kv_heads, heads // group)
        if ffn.get("no_op"):
            continue
        if ffn.get("replace_with_linear"):
            mlp_params += hidden * hidden
            continue
        mult = ffn.get("ffn_mult")
        if not isinstance(mult, (int, float)):
            raise FactsError(f"{where}: block_configs[{i}].ffn.ffn_mult: expected a number")
        inter = _find_multiple(int(2 * mult * hidden / 3), 256)
        mlp_params += 3 * hidden * inter
    out: dict[str, Any] = {"attention_layers": attention_layers, "mlp_params": mlp_params}
    if kv_heads:
        out["num_kv_heads"] = kv_heads
    return out


def _hybrid_pattern(pattern: str, cfg: _Keys, hidden: int) -> dict[str, Any]:
    """Nemotron-H ``hybrid_override_pattern``: M = Mamba, * = attention, - = MLP, E = MoE, one char per layer."""
    mamba = pattern.count("M")
    extra = 0
    if mamba:
        heads = cfg.integer("mamba_num_heads")
        head_dim = cfg.integer("mamba_head_dim")
        state = cfg.integer("ssm_state_size")
        groups = cfg.integer("n_groups", default=1)
        kernel = cfg.integer("conv_kernel", default=4)
        inner = heads * head_dim
        in_proj = hidden * (2 * inner + 2 * groups * state + heads)
        conv = (inner + 2 * groups * state) * kernel
        extra = mamba * (in_proj + conv + inner * hidden + 3 * heads + inner)
    return {
        "num_layers": len(pattern),
        "attention_layers": pattern.count("*"),
        "dense_mlp_layers": pattern.count("-"),
        "moe_layers": pattern.count("E"),
        "extra_params": extra,
    }


def hf_config_facts(cfg_data: dict[str, Any], where: str) -> ModelFacts:
    """Model facts from a parsed HF ``config.json`` (multimodal configs: the ``text_config`` part)."""
    text = cfg_data.get("text_config")
    data = text if isinstance(text, dict) else cfg_data
    cfg = _Keys(data, where)
    if cfg.has("kv_lora_rank"):
        raise FactsError(
            f"{where}: multi-head latent attention (kv_lora_rank) is not modelled by the planner yet; "
            "give the model's numbers under facts: in the spec"
        )
    hidden = cfg.positive("hidden_size", "n_embd", "d_model")
    heads = cfg.positive("num_attention_heads", "n_head")
    num_layers = cfg.positive("num_hidden_layers", "n_layer", "num_layers")
    experts = cfg.integer("num_local_experts", "num_experts", "n_routed_experts", default=0)
    values: dict[str, Any] = {
        "architecture": (data.get("architectures") or cfg_data.get("architectures") or [None])[0],
        "num_layers": num_layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": cfg.integer("num_key_value_heads", "num_kv_heads", default=heads),
        "head_dim": cfg.integer("head_dim", default=hidden // heads),
        "vocab_size": cfg.integer("vocab_size"),
        "intermediate_size": cfg.integer("intermediate_size", "ffn_hidden_size", default=0),
        "tie_word_embeddings": bool(data.get("tie_word_embeddings", cfg_data.get("tie_word_embeddings", False))),
        "max_position_embeddings": cfg.optional_integer("max_position_embeddings"),
    }
    if experts:
        values["num_experts"] = experts
        values["experts_per_token"] = cfg.integer("num_experts_per_tok", "experts_per_token", "moe_topk")
        # Mixtral and GPT-OSS size experts with intermediate_size; Qwen-MoE and DeepSeek have their own key.
        values["moe_intermediate_size"] = cfg.integer("moe_intermediate_size", default=values["intermediate_size"])
        shared = cfg.integer("shared_expert_intermediate_size", default=0)
        values["shared_expert_intermediate_size"] = shared
        dense_layers = data.get("mlp_only_layers") or []
        if not isinstance(dense_layers, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in dense_layers
        ):
            raise FactsError(
                f"{where}: mlp_only_layers: expected a list of layer indices (e.g. [0, 1]), got {dense_layers!r}"
            )
        first_dense = cfg.integer("first_k_dense_replace", default=0)
        n_dense = len(dense_layers) + first_dense
        values["moe_layers"] = num_layers - n_dense
        values["dense_mlp_layers"] = n_dense
    values.update(_layer_composition(cfg, values["num_layers"], hidden, heads))
    quant = _quant_from_hf_config(cfg_data, where)
    if quant is not None:
        values["quantization"] = quant
    return _facts(where, **values)


def read_hf_config(path: Path) -> ModelFacts:
    return hf_config_facts(_load_json(path), str(path))


def read_checkpoint_dir(directory: Path) -> ModelFacts:
    """``config.json`` of a HF checkpoint, with ``hf_quant_config.json`` merged in when present."""
    facts = read_hf_config(directory / "config.json")
    quant_file = directory / "hf_quant_config.json"
    if quant_file.is_file():
        facts = facts.model_copy(update={"quantization": read_hf_quant_config(quant_file)})
    return facts


def read_engine_config(path: Path) -> EngineFacts:
    """A TensorRT-LLM engine's ``config.json`` (unified builder format, TensorRT-LLM 0.9 and later)."""
    data = _load_json(path)
    where = str(path)
    pretrained, build = data.get("pretrained_config"), data.get("build_config")
    if not isinstance(pretrained, dict) or not isinstance(build, dict):
        raise FactsError(
            f"{where}: expected pretrained_config and build_config (an engine built by trtllm-build 0.9 or later); "
            "rebuild the engine or give facts: in the spec"
        )
    model_cfg = _Keys(pretrained, f"{where}: pretrained_config")
    model_data = dict(pretrained)
    # The engine writes head_size where HF writes head_dim, and keeps the MoE block under "moe".
    if "head_size" in model_data and "head_dim" not in model_data:
        model_data["head_dim"] = model_data["head_size"]
    moe = pretrained.get("moe")
    if isinstance(moe, dict) and moe.get("num_experts"):
        model_data["num_experts"] = moe["num_experts"]
        model_data["num_experts_per_tok"] = moe.get("top_k")
    model_data.pop("quantization", None)
    model = hf_config_facts(model_data, f"{where}: pretrained_config")
    quant_data = pretrained.get("quantization") or {}
    quant = _quant(
        where,
        {
            "quant_algo": quant_data.get("quant_algo"),
            "group_size": quant_data.get("group_size") if quant_data.get("quant_algo") else None,
            "kv_cache_quant_algo": quant_data.get("kv_cache_quant_algo"),
            "exclude_modules": list(quant_data.get("exclude_modules") or []),
        },
    )
    mapping = _Keys(pretrained.get("mapping") or {}, f"{where}: pretrained_config.mapping")
    b = _Keys(build, f"{where}: build_config")
    plugin = _Keys(build.get("plugin_config") or {}, f"{where}: build_config.plugin_config")
    # Older engines record paged KV as a plugin switch; newer ones as build_config.kv_cache_type.
    kv_type = build.get("kv_cache_type")
    paged = kv_type == "PAGED" if isinstance(kv_type, str) else plugin.flag("paged_kv_cache", True)
    max_input = b.integer("max_input_len")
    max_seq = b.optional_integer("max_seq_len")
    if max_seq is None:
        max_seq = max_input + b.integer("max_output_len")
    return EngineFacts(
        path=str(path.parent),
        trtllm_version=data.get("version") if isinstance(data.get("version"), str) else None,
        model=model.model_copy(update={"quantization": quant}),
        dtype=model_cfg.text("dtype", "float16") or "float16",
        tensor_parallel=mapping.integer("tp_size", default=1),
        pipeline_parallel=mapping.integer("pp_size", default=1),
        max_batch_size=b.integer("max_batch_size"),
        max_input_len=max_input,
        max_seq_len=max_seq,
        max_num_tokens=b.optional_integer("max_num_tokens"),
        max_beam_width=b.integer("max_beam_width", default=1),
        paged_kv_cache=paged,
        tokens_per_block=plugin.optional_integer("tokens_per_block"),
        paged_context_fmha=plugin.flag("use_paged_context_fmha", False),
        fp8_context_fmha=plugin.flag("use_fp8_context_fmha", False),
        gemm_plugin=plugin.text("gemm_plugin"),
        quantization=quant,
    )


def read_engine_dir(directory: Path) -> EngineFacts:
    return read_engine_config(directory / "config.json")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else a


def kv_heads_per_rank(num_kv_heads: int, tensor_parallel: int) -> int:
    """KV heads one TP rank holds; replicated when TP exceeds the KV head count."""
    return max(1, math.ceil(num_kv_heads / tensor_parallel))
