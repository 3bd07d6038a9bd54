"""The quick-start demo (`make demo`): render examples/quickstart.yaml for the CPU reference engine,
start it here (tritonservers, router, exporter), stream answers through the official openai
client — once from the aggregated pool, once through the prefill → decode pair — then stop it all.

The reference engine is a small deterministic stand-in for TensorRT-LLM: its words continue a short
text shipped with it (reference_corpus.py) rather than answer the question; everything around them (tokenizer, chat template, ensembles, streaming, the router,
disaggregated hand-off, metrics) is the real thing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI

from generator.pipeline import build
from generator.render.options import RenderOptions
from generator.runtime.launcher import LaunchSettings, Managed
from generator.runtime.local_stack import LocalStackSettings, service_url, start_local_stack
from generator.runtime.tritonserver import find_tritonserver
from generator.write import write_output

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "quickstart.yaml"
OUT = ROOT / "build" / "quickstart"


def main() -> int:
    print(f"rendering {SPEC.relative_to(ROOT)} → {OUT.relative_to(ROOT)}/ (reference engine)")
    built = build(SPEC, OUT, reference_engine=True)
    write_output(built.files, OUT, force=True)
    settings = LocalStackSettings(launch=LaunchSettings(), router_port=0, exporter_port=0, prometheus=False)
    run_dir = OUT.with_name(OUT.name + ".run")
    print(f"starting the stack (logs in {run_dir.relative_to(ROOT)}/)")
    launcher = start_local_stack(
        built.stack, OUT, run_dir, find_tritonserver(), RenderOptions(SPEC.parent, OUT), settings, on_progress=_ready
    )
    try:
        router = service_url(launcher, "router")
        client = OpenAI(base_url=f"{router}/v1", api_key="not-needed-locally")
        print(f"\nmodels at {router}/v1: {[m.id for m in client.models.list()]}")
        print("(the reference engine is a deterministic stand-in: it continues a short text about serving, it does not answer)")
        for model, what in (("tiny-chat", "aggregated pool, 2 replicas"), ("tiny-pd", "prefill → decode")):
            _stream(client, model, what)
        time.sleep(1.0)  # engines publish their counters every stats_check_period_ms
        exporter = service_url(launcher, "exporter")
        metrics = httpx.get(f"{exporter}/metrics", timeout=10).text
        generated = [line for line in metrics.splitlines() if line.startswith("tritonstack_generated_tokens_total")]
        print("\nexporter says:\n  " + "\n  ".join(generated[:4]))
    finally:
        print("\nstopping…")
        launcher.stop()
    return 0


def _ready(member: Managed) -> None:
    print(f"  {member.name} ready after {member.ready_after_s:.1f}s")


def _stream(client: OpenAI, model: str, what: str) -> None:
    print(f"\n{model} ({what}) — streaming a chat answer:\n  ", end="", flush=True)
    started = time.monotonic()
    first = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "How does Triton serve a TensorRT-LLM engine?"}],
        max_tokens=48,
        temperature=0.7,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.monotonic()
                print(choice.delta.content, end="", flush=True)
    total = time.monotonic() - started
    ttft = (first - started) * 1000 if first else float("nan")
    tokens = usage.completion_tokens if usage else 0
    print(f"\n  [{tokens} tokens, first after {ttft:.0f} ms, {tokens / total:.0f} tokens/s end to end]")


if __name__ == "__main__":
    sys.exit(main())
