"""How long does a 100-model spec take to render (and validate)? Target: render under 1 s.

    python benchmarks/render_speed.py [--models 100] [--repeat 5]

Builds a spec with N models spread over aggregated engine pools and LLM-API prefill/decode pairs,
then times parse, render, and validate separately (best of --repeat runs, time.perf_counter).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from generator.render import RenderOptions, render
from generator.spec import load_spec
from generator.validate import validate_repositories


def make_spec(models: int) -> dict:
    """Every third group of ten models is a prefill/decode pair; those go through the LLM-API path,
    the one where separate prefill and decode servers can move KV on 26.07 (the engine backend's
    transceiver is MPI-only), the others are engines in aggregated pools."""
    names = [f"model-{i:03d}" for i in range(models)]
    pools, disaggregated = [], set()
    for start in range(0, models, 10):
        group = names[start : start + 10]
        if (start // 10) % 3 == 2:
            pools.append({"name": f"pre-{start}", "role": "prefill", "models": group, "partner": f"dec-{start}"})
            pools.append({"name": f"dec-{start}", "role": "decode", "models": group, "partner": f"pre-{start}"})
            disaggregated.update(group)
        else:
            pools.append({"name": f"agg-{start}", "models": group, "replicas": 2})

    def model(name: str) -> dict:
        common = {"name": name, "tokenizer_dir": f"/tokenizers/{name}", "max_batch_size": 64}
        if name in disaggregated:
            return {**common, "llm_api": True, "checkpoint_dir": f"/checkpoints/{name}"}
        return {**common, "engine_dir": f"/engines/{name}"}

    return {
        "apiVersion": "tritonstack/v1",
        "name": "bench",
        "target": {"triton": "26.07", "gpu": "b200"},
        "models": [model(n) for n in names],
        "pools": pools,
    }


def best(fn, repeat: int) -> tuple[float, object, float]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "stack.yaml"
        spec_path.write_text(yaml.safe_dump(make_spec(args.models)))
        options = RenderOptions(spec_dir=Path(tmp), out_dir=Path(tmp) / "build")
        parse_s, stack, _ = best(lambda: load_spec(spec_path), args.repeat)
        render(stack, options)  # warm the template cache, as a long-running process would have it
        render_s, files, render_median = best(lambda: render(stack, options), args.repeat)
        validate_s, _, _ = best(lambda: validate_repositories(files, stack), args.repeat)
    configs = sum(1 for p in files if p.endswith("config.pbtxt"))
    print(f"{args.models} models, {len(stack.pools)} pools → {len(files)} files ({configs} config.pbtxt)")
    print(f"parse    {parse_s * 1000:8.1f} ms")
    print(f"render   {render_s * 1000:8.1f} ms (median {render_median * 1000:.1f} ms)   target < 1000 ms")
    print(f"validate {validate_s * 1000:8.1f} ms")
    print("PASS" if render_s < 1.0 else "FAIL: render of a 100-model spec took over 1 s")


if __name__ == "__main__":
    main()
