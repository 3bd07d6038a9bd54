"""Lints: problems a stack would only show when Triton loads it, or as wrong output, found up front.

Every finding has a stable id, a severity, where it is, what is wrong (with the numbers) and the fix.
``LINTS`` lists every id with its one-line summary; ``tritonstack lint`` prints findings and exits
non-zero when any is an error.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from generator.plan.catalogs import Catalogs, Gpu, load_catalogs, version_key
from generator.plan.plan import StackPlan, size_stack
from generator.plan.sources import (
    ResolvedFacts,
    effective_kv_dtype,
    effective_precision,
    local_path,
    resolve_facts,
)
from generator.spec import RELEASES, Model, Stack

__all__ = ["Finding", "LINTS", "lint_stack", "has_chat_template"]

Severity = Literal["error", "warning", "info"]

LINTS: dict[str, tuple[Severity, str]] = {
    "TS001": ("error", "container too old for the GPU: its TensorRT-LLM predates support for the GPU's SM"),
    "TS002": ("error", "weight precision the GPU cannot run (NVFP4 without FP4 Tensor Cores, FP8 before sm_89)"),
    "TS003": ("warning", "KV cache dtype: NVFP4 KV (accuracy) or a dtype the GPU cannot run (error)"),
    "TS004": ("error", "chat is enabled but the tokenizer has no chat template"),
    "TS005": ("error", "engine build limits below the spec (batch, input/sequence length, max_num_tokens, TP/PP)"),
    "TS006": ("error", "KV cache reuse without paged context FMHA in the engine"),
    "TS007": ("error", "kv_cache.free_gpu_mem_fraction of co-located models sums over 1 on a GPU"),
    "TS008": ("warning", "streaming off (non-decoupled) with max_batch_size > 1: batched requests are refused"),
    "TS009": ("error", "prefill/decode pool without a partner pool serving the same models"),
    "TS010": ("error", "the stack does not fit its GPUs"),
    "TS011": ("warning", "KV budget holds fewer full-length sequences than max_batch_size"),
    "TS012": ("error", "a model file (engine/checkpoint config.json) exists but cannot be read"),
    "TS013": ("warning", "no model facts: memory is not planned for this model"),
    "TS014": ("error", "engine built with a TensorRT-LLM version other than the container's"),
    "TS015": ("warning", "tensor parallelism across PCIe (GPU without NVLink)"),
    "TS016": ("warning", "spec precision differs from the engine's or checkpoint's"),
    "TS017": ("info", "target.gpu not set: GPU checks and planning skipped"),
    "TS018": ("warning", "the planner had to assume something (e.g. a quantization it does not model)"),
    "TS019": ("info", "a path exists only on the serving node: not checked here"),
}


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    where: str
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "where": self.where, "message": self.message, "fix": self.fix}

    def line(self) -> str:
        return f"{self.severity.upper():7} {self.id} {self.where}: {self.message}\n        fix: {self.fix}"


@dataclass(frozen=True)
class _Context:
    stack: Stack
    catalogs: Catalogs
    base_dir: Path
    gpu: Gpu | None
    plan: StackPlan
    resolved: dict[str, ResolvedFacts]


def _finding(lint_id: str, where: str, message: str, fix: str, severity: Severity | None = None) -> Finding:
    return Finding(lint_id, severity or LINTS[lint_id][0], where, message, fix)


def _where(ctx: _Context, model: Model) -> str:
    index = next(i for i, m in enumerate(ctx.stack.models) if m.name == model.name)
    return f"models[{index}] ({model.name})"


def _gpu_models(ctx: _Context) -> list[Model]:
    return [m for m in ctx.stack.models if m.reference_engine is None]


def lint_container_gpu(ctx: _Context) -> list[Finding]:
    gpu = ctx.gpu
    if gpu is None or not _gpu_models(ctx):
        return []
    release = ctx.stack.target.release
    if version_key(release.trtllm) >= version_key(gpu.first_trtllm):
        return []
    newer = sorted(
        (r for r in RELEASES.values() if version_key(r.trtllm) >= version_key(gpu.first_trtllm)),
        key=lambda r: version_key(r.release),
    )
    fix = f"use target.triton: \"{newer[0].release}\" or later" if newer else "use a newer container release"
    return [
        _finding(
            "TS001",
            "target.triton",
            f"Triton {release.release} ships TensorRT-LLM {release.trtllm}, but the {gpu.name} ({gpu.sm_arch}) is "
            f"supported from TensorRT-LLM {gpu.first_trtllm}",
            f"{fix} (TensorRT-LLM {gpu.first_trtllm}+)",
        )
    ]


def lint_precision_gpu(ctx: _Context) -> list[Finding]:
    gpu, out = ctx.gpu, []
    if gpu is None:
        return []
    for model in _gpu_models(ctx):
        fmt_key, _, _ = effective_precision(model, ctx.resolved[model.name])
        fmt = ctx.catalogs.formats[fmt_key]
        if fmt.needs_fp4_tensor_cores and not gpu.has_fp4:
            out.append(
                _finding(
                    "TS002",
                    _where(ctx, model),
                    f"{fmt.name} weights need FP4 Tensor Cores; the {gpu.name} ({gpu.sm_arch}) has none",
                    "use precision: fp8 on this GPU, or target a Blackwell GPU (b200, gb200, b300, gb300, "
                    "rtx-pro-6000, gb10)",
                )
            )
        elif version_key(gpu.sm) < version_key(fmt.min_sm):
            out.append(
                _finding(
                    "TS002",
                    _where(ctx, model),
                    f"{fmt.name} weights need sm {fmt.min_sm} or newer; the {gpu.name} is sm {gpu.sm}",
                    "choose a precision this GPU supports (bf16, fp8 on sm 8.9+)",
                )
            )
    return out


def lint_kv_dtype(ctx: _Context) -> list[Finding]:
    out = []
    for model in _gpu_models(ctx):
        resolved = ctx.resolved[model.name]
        _, base, _ = effective_precision(model, resolved)
        kv_key = effective_kv_dtype(model, resolved, base, ctx.gpu)
        kv = ctx.catalogs.kv_formats[kv_key]
        if ctx.gpu is not None and version_key(ctx.gpu.sm) < version_key(kv.min_sm):
            out.append(
                _finding(
                    "TS003",
                    _where(ctx, model),
                    f"{kv_key} KV cache needs sm {kv.min_sm} or newer; the {ctx.gpu.name} is sm {ctx.gpu.sm}",
                    "set kv_cache_dtype: fp8 (sm 8.9+) or bf16",
                    severity="error",
                )
            )
        elif kv_key == "nvfp4":
            out.append(
                _finding(
                    "TS003",
                    _where(ctx, model),
                    "NVFP4 KV cache (4.5 bits per element) halves FP8 KV memory but loses accuracy on long contexts",
                    "prefer kv_cache_dtype: fp8 unless you have measured the accuracy of NVFP4 KV for this model",
                )
            )
    return out


def has_chat_template(tokenizer_dir: Path) -> bool:
    """True when transformers would find a chat template in this directory."""
    if (tokenizer_dir / "chat_template.jinja").is_file() or (tokenizer_dir / "chat_template.json").is_file():
        return True
    config = tokenizer_dir / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return bool(isinstance(data, dict) and data.get("chat_template"))


def vocabulary_key(tokenizer_dir: Path) -> tuple[int, str] | None:
    """(vocab size, SHA-256 of the token → id map) of a tokenizer directory; None when unreadable.

    Two exports of the same base model (BF16, FP8, NVFP4) share this key; an unrelated model with
    a chat template does not, so its template is never suggested.
    """
    vocab: Any = None
    try:
        tokenizer_json = tokenizer_dir / "tokenizer.json"
        vocab_json = tokenizer_dir / "vocab.json"
        if tokenizer_json.is_file():
            data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
            model = data.get("model") if isinstance(data, dict) else None
            vocab = model.get("vocab") if isinstance(model, dict) else None
            added = data.get("added_tokens") if isinstance(data, dict) else None
            if isinstance(vocab, dict) and isinstance(added, list):
                vocab = {**vocab, **{t["content"]: t["id"] for t in added if isinstance(t, dict) and "content" in t}}
        elif vocab_json.is_file():
            vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(vocab, list):  # unigram models list [token, score] pairs
        vocab = {str(entry[0]) if isinstance(entry, list) else str(entry): i for i, entry in enumerate(vocab)}
    if not isinstance(vocab, dict) or not vocab:
        return None
    digest = hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()
    return len(vocab), digest


def lint_chat_template(ctx: _Context) -> list[Finding]:
    out = []
    for model in ctx.stack.models:
        tokenizer = local_path(model.tokenizer_dir, ctx.base_dir)
        if not model.chat or tokenizer is None:
            continue
        if not tokenizer.exists():
            out.append(
                _finding(
                    "TS019",
                    _where(ctx, model),
                    f"tokenizer_dir {model.tokenizer_dir} does not exist here (a path on the serving node?): its chat "
                    "template was not checked here",
                    "run `tritonstack lint` on the serving node (or where the tokenizer is mounted) to check it",
                )
            )
            continue
        if not tokenizer.is_dir() or has_chat_template(tokenizer):
            continue
        key = vocabulary_key(tokenizer)
        siblings = (
            sorted(
                d
                for d in tokenizer.parent.iterdir()
                if d.is_dir() and d != tokenizer and has_chat_template(d) and key is not None
                and vocabulary_key(d) == key
            )
            if tokenizer.parent.is_dir()
            else []
        )
        if siblings:
            fix = (
                f"point tokenizer_dir at {siblings[0]} (a sibling export of the same base model: same vocabulary, "
                "with a chat template), or add one"
            )
        else:
            fix = "add the model's chat_template to tokenizer_config.json (or chat_template.jinja), or set chat: false"
        out.append(
            _finding(
                "TS004",
                _where(ctx, model),
                f"chat is enabled but {tokenizer} has no chat template; the first chat request would fail",
                fix,
            )
        )
    return out


def lint_engine_limits(ctx: _Context) -> list[Finding]:
    out = []
    for model in _gpu_models(ctx):
        engine = ctx.resolved[model.name].engine
        if engine is None:
            continue
        checks = [
            ("max_batch_size", model.max_batch_size, engine.max_batch_size),
            ("max_input_len", model.max_input_len, engine.max_input_len),
            ("max_input_len + max_output_len", model.max_seq_len, engine.max_seq_len),
        ]
        if model.max_num_tokens is not None and engine.max_num_tokens is not None:
            checks.append(("max_num_tokens", model.max_num_tokens, engine.max_num_tokens))
        for name, wanted, built in checks:
            if wanted > built:
                out.append(
                    _finding(
                        "TS005",
                        _where(ctx, model),
                        f"{name} is {wanted} but the engine at {engine.path} was built with {built}",
                        f"lower {name} to {built}, or rebuild the engine with the recipe (tritonstack recipes)",
                    )
                )
        for name, wanted, built in (
            ("tensor_parallel", model.tensor_parallel, engine.tensor_parallel),
            ("pipeline_parallel", model.pipeline_parallel, engine.pipeline_parallel),
        ):
            if wanted != built:
                out.append(
                    _finding(
                        "TS005",
                        _where(ctx, model),
                        f"{name} is {wanted} but the engine at {engine.path} was built for {built}",
                        f"set {name}: {built}, or rebuild the engine for {wanted}",
                    )
                )
    return out


def lint_kv_reuse(ctx: _Context) -> list[Finding]:
    out = []
    for model in _gpu_models(ctx):
        engine = ctx.resolved[model.name].engine
        if not model.kv_cache.reuse or engine is None:
            continue
        if not engine.paged_kv_cache or not engine.paged_context_fmha:
            missing = "paged KV cache" if not engine.paged_kv_cache else "paged context FMHA"
            out.append(
                _finding(
                    "TS006",
                    _where(ctx, model),
                    f"kv_cache.reuse is on but the engine at {engine.path} was built without {missing}",
                    "rebuild with --kv_cache_type paged --use_paged_context_fmha enable (the recipe does), "
                    "or set kv_cache.reuse: false",
                )
            )
    return out


def lint_kv_fractions(ctx: _Context) -> list[Finding]:
    totals: dict[tuple[str, int], list[tuple[str, float]]] = defaultdict(list)
    for pool in ctx.stack.pools:
        for name in pool.models:
            model = ctx.stack.model(name)
            fraction = model.kv_cache.free_gpu_mem_fraction
            if fraction is None or model.reference_engine is not None:
                continue
            for index in pool.rank_gpus(model):
                totals[(pool.name, index)].append((name, fraction))
    out = []
    for (pool, index), parts in sorted(totals.items()):
        total = sum(f for _, f in parts)
        if total > 1.0:
            listed = " + ".join(f"{n} {f:g}" for n, f in parts)
            out.append(
                _finding(
                    "TS007",
                    f"pool {pool} GPU {index}",
                    f"kv_cache.free_gpu_mem_fraction sums to {total:g} ({listed}); each is a share of the memory "
                    "free when that model loads, so the result depends on load order",
                    "remove free_gpu_mem_fraction and let the planner render max_tokens_in_paged_kv_cache per model, "
                    "or make the fractions sum to at most 1",
                )
            )
    return out


def lint_decoupled(ctx: _Context) -> list[Finding]:
    return [
        _finding(
            "TS008",
            _where(ctx, model),
            f"streaming: false renders a non-decoupled tensorrt_llm model, which refuses requests with batch "
            f"size > 1, yet max_batch_size is {model.max_batch_size}",
            "set streaming: true (decoupled models also answer non-streaming requests), or max_batch_size: 1",
        )
        for model in _gpu_models(ctx)
        if not model.streaming and model.max_batch_size > 1
    ]


def lint_pool_partners(ctx: _Context) -> list[Finding]:
    out = []
    for i, pool in enumerate(ctx.stack.pools):
        if pool.role == "aggregated":
            continue
        wanted = "decode" if pool.role == "prefill" else "prefill"
        partner = ctx.stack.partner_of(pool) if pool.partner is None or _has_pool(ctx, pool.partner) else None
        missing = sorted(set(pool.models) - set(partner.models)) if partner and partner.role == wanted else pool.models
        if partner is None or partner.role != wanted or missing:
            out.append(
                _finding(
                    "TS009",
                    f"pools[{i}] ({pool.name})",
                    f"{pool.role} pool has no {wanted} pool serving {sorted(missing)}",
                    f"add a pool with role: {wanted} serving the same models (name it in partner: when there are several)",
                )
            )
    return out


def _has_pool(ctx: _Context, name: str) -> bool:
    return any(p.name == name for p in ctx.stack.pools)


def lint_fit(ctx: _Context) -> list[Finding]:
    out = [
        _finding("TS010", "plan", problem, "see the message; `tritonstack plan` shows the numbers")
        for problem in ctx.plan.fit_problems
    ]
    for plan in ctx.plan.models:
        model = ctx.stack.model(plan.name)
        concurrent = plan.max_concurrent_sequences
        if concurrent is not None and 1 <= concurrent < model.max_batch_size:
            out.append(
                _finding(
                    "TS011",
                    _where(ctx, model),
                    f"the KV budget ({plan.kv_token_budget} tokens) holds {concurrent} sequences of max_seq_len "
                    f"{model.max_seq_len}, fewer than max_batch_size {model.max_batch_size}",
                    "lower max_batch_size or the sequence lengths, use an fp8 KV cache, or give the model more GPUs",
                )
            )
    return out


def lint_facts(ctx: _Context) -> list[Finding]:
    out = []
    for model in _gpu_models(ctx):
        resolved = ctx.resolved[model.name]
        for problem in resolved.problems:
            out.append(
                _finding("TS012", _where(ctx, model), problem, "fix or regenerate the file, or remove the path")
            )
        for assumption in resolved.assumptions:
            out.append(
                _finding(
                    "TS018",
                    _where(ctx, model),
                    assumption,
                    "give the model's real precision (precision:, facts:) or a checkpoint in a format the planner knows",
                )
            )
        if resolved.facts is None and ctx.gpu is not None:
            out.append(
                _finding(
                    "TS013",
                    _where(ctx, model),
                    "no engine or checkpoint config.json is readable here and the spec gives no facts",
                    "run the planner where checkpoint_dir/engine_dir are readable, or add facts: to the model",
                )
            )
    return out


def lint_engine_version(ctx: _Context) -> list[Finding]:
    out = []
    container = ctx.stack.target.release.trtllm
    for model in _gpu_models(ctx):
        engine = ctx.resolved[model.name].engine
        if engine is None or engine.trtllm_version is None:
            continue
        if version_key(engine.trtllm_version)[:3] != version_key(container)[:3]:
            out.append(
                _finding(
                    "TS014",
                    _where(ctx, model),
                    f"the engine at {engine.path} was built with TensorRT-LLM {engine.trtllm_version}, but Triton "
                    f"{ctx.stack.target.triton} runs {container}; TensorRT engines only load in the version that built them",
                    f"rebuild the engine inside the {ctx.stack.target.release.container_image} container "
                    "(tritonstack recipes writes the commands)",
                )
            )
    return out


def lint_tp_pcie(ctx: _Context) -> list[Finding]:
    if ctx.gpu is None or ctx.gpu.nvlink:
        return []
    return [
        _finding(
            "TS015",
            _where(ctx, model),
            f"tensor_parallel {model.tensor_parallel} on {ctx.gpu.name}: all-reduces cross PCIe (no NVLink), "
            "so decode is often slower than on one GPU",
            "prefer one GPU per model (fp8/nvfp4 to fit) and scale with pool replicas; use TP only when it must fit",
        )
        for model in _gpu_models(ctx)
        if model.tensor_parallel > 1
    ]


def lint_precision_mismatch(ctx: _Context) -> list[Finding]:
    out = []
    for model in _gpu_models(ctx):
        resolved = ctx.resolved[model.name]
        fmt_key, _, quant = effective_precision(model, resolved)
        from_files = resolved.engine is not None or (quant is not None and quant.quant_algo is not None)
        if from_files and fmt_key != model.precision:
            out.append(
                _finding(
                    "TS016",
                    _where(ctx, model),
                    f"precision is {model.precision} but {resolved.source} is {fmt_key}; the plan uses {fmt_key}",
                    f"set precision: {fmt_key}, or point the model at a {model.precision} engine/checkpoint",
                )
            )
    return out


def lint_gpu_unset(ctx: _Context) -> list[Finding]:
    if ctx.gpu is not None or not _gpu_models(ctx):
        return []
    return [
        _finding(
            "TS017",
            "target.gpu",
            "target.gpu is not set, so GPU support, precision and memory checks were skipped",
            f"set target.gpu to one of {', '.join(sorted(ctx.catalogs.gpus))}",
        )
    ]


ALL_LINTS: tuple[Callable[[_Context], list[Finding]], ...] = (
    lint_gpu_unset,
    lint_container_gpu,
    lint_precision_gpu,
    lint_kv_dtype,
    lint_chat_template,
    lint_facts,
    lint_engine_version,
    lint_engine_limits,
    lint_kv_reuse,
    lint_kv_fractions,
    lint_decoupled,
    lint_pool_partners,
    lint_tp_pcie,
    lint_precision_mismatch,
    lint_fit,
)


def lint_stack(
    stack: Stack, base_dir: Path | None = None, catalogs: Catalogs | None = None, plan: StackPlan | None = None
) -> list[Finding]:
    """Every finding for ``stack``, errors first, then by id (``plan``: its numbers, when already sized)."""
    catalogs = catalogs or load_catalogs()
    base_dir = base_dir if base_dir is not None else Path.cwd()
    gpu = catalogs.gpu(stack.target.gpu) if stack.target.gpu is not None else None
    resolved = {m.name: resolve_facts(m, base_dir) for m in stack.models if m.reference_engine is None}
    plan = plan if plan is not None else size_stack(stack, catalogs, base_dir)
    ctx = _Context(stack, catalogs, base_dir, gpu, plan, resolved)
    findings = [f for lint in ALL_LINTS for f in lint(ctx)]
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (order[f.severity], f.id))
