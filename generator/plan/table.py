"""The plan as a readable text table (the JSON form is ``StackPlan.to_json``)."""

from __future__ import annotations

from generator.plan.catalogs import GIB
from generator.plan.plan import StackPlan

__all__ = ["format_plan", "format_table"]


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f} GiB"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _billions(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def format_plan(plan: StackPlan) -> str:
    where = f"{plan.gpu_name} x {plan.gpus_per_node} per node" if plan.gpu_name else "no target GPU"
    price = f", ${plan.price_per_gpu_hour:g}/GPU-hour" if plan.price_per_gpu_hour else ""
    out = [f"Stack {plan.stack}: Triton {plan.triton} (TensorRT-LLM {plan.trtllm}) on {where}{price}", ""]
    model_rows = []
    for m in plan.models:
        decode = "-"
        if m.decode_tokens_per_s_per_sequence is not None:
            decode = (
                f"{_num(m.decode_tokens_per_s_per_sequence)} / {_num(m.decode_tokens_per_s_aggregate)} "
                f"@{m.decode_batch}"
            )
        kv_token = "-" if m.kv_bytes_per_token_per_gpu is None else f"{m.kv_bytes_per_token_per_gpu / 1024:.1f} KiB"
        budget = _num(m.kv_token_budget) + (" (spec)" if m.kv_budget_from_spec else "")
        model_rows.append(
            [
                m.name,
                "reference (CPU)" if m.engine.startswith("reference") else m.engine,
                m.precision or "-",
                m.kv_cache_dtype or "-",
                f"{m.tensor_parallel}x{m.pipeline_parallel}",
                _billions(m.params_total),
                _billions(m.params_active_per_token),
                _gib(m.weight_bytes_per_gpu),
                kv_token,
                budget,
                _num(m.max_concurrent_sequences),
                decode,
                "-" if m.ttft_s is None else f"{m.ttft_s * 1e3:,.0f} / {m.itl_s * 1e3:,.1f}",
                "-" if m.gpus_in_deployment is None else str(m.gpus_in_deployment),
                "-" if m.usd_per_million_output_tokens is None else f"{m.usd_per_million_output_tokens:.3f}",
            ]
        )
    out.append("Models")
    out.append(
        format_table(
            [
                "model", "engine", "weights", "kv", "TPxPP", "params B", "active B", "weights/GPU",
                "KV/token/GPU", "KV budget tok", "max seqs", "decode tok/s 1 seq / all @batch",
                "TTFT / ITL ms @batch", "GPUs", "$/M out",
            ],
            model_rows,
        )
    )
    if plan.gpus:
        gpu_rows = [
            [
                g.pool,
                str(g.gpu_index),
                ", ".join(g.models),
                _gib(g.capacity_bytes),
                _gib(g.weight_bytes),
                _gib(g.activation_bytes),
                _gib(g.overhead_bytes),
                _gib(g.kv_bytes),
                _gib(g.used_bytes),
                _gib(g.free_bytes),
                f"{g.headroom:.0%}",
            ]
            for g in plan.gpus
        ]
        out += ["", "GPUs (one pool replica each)"]
        out.append(
            format_table(
                ["pool", "gpu", "models", "plannable", "weights", "activations", "runtime", "KV", "used", "free",
                 "headroom"],
                gpu_rows,
            )
        )
    if plan.servers:
        server_rows = [
            [s.pool, str(s.replicas), str(s.gpus_per_replica), ", ".join(s.models), _gib(s.resident_bytes),
             _gib(s.resident_bytes_per_gpu_max)]
            for s in plan.servers
        ]
        out += ["", "Servers (resident memory of one tritonserver = one pool replica)"]
        out.append(format_table(["pool", "replicas", "GPUs each", "models", "resident", "largest GPU"], server_rows))
    notes = list(plan.notes) + [f"{m.name}: {n}" for m in plan.models for n in m.notes]
    c = plan.constants
    notes.append(
        f"KV budgets are capped at max_batch_size x max_seq_len tokens, plus {c['kv_reuse_headroom']:g}x that "
        "again as reuse headroom for models with kv_cache.reuse (cached prefixes); the rest of the memory stays free"
    )
    notes.append(
        f"decode ceilings assume {c['bandwidth_efficiency']:.0%} of peak memory bandwidth and never more than "
        f"{c['prefill_compute_efficiency']:.0%} of the dense Tensor Core peak; TTFT/ITL add "
        f"{c['decode_step_overhead_us']:g} us per step; activations are an estimate; runtime = "
        f"{c['runtime_overhead_gib']:g} GiB per model per GPU (+ NCCL when parallel)"
    )
    notes.append("$/M out prices every GPU of every pool replica serving the model (prefill pools included)")
    out += ["", "Notes"] + [f"- {n}" for n in notes]
    lint_lines = [
        f"{f['severity'].upper():7} {f['id']} {f['where']}: {f['message']}"
        for f in plan.findings
        if f["severity"] != "info" and f["id"] != "TS010"
    ]
    if lint_lines:
        out += ["", "Lint (tritonstack lint shows the fixes)"] + [f"- {line}" for line in lint_lines]
    if plan.fit_problems:
        out += ["", "Does not fit"] + [f"- {p}" for p in plan.fit_problems]
    return "\n".join(out) + "\n"
