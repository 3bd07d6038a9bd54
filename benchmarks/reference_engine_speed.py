"""How fast does the tritonstack reference engine (CPU stand-in for TensorRT-LLM) produce tokens?

    python benchmarks/reference_engine_speed.py [--tokenizer-dir examples/tokenizers/tiny-chat]
        [--tokens 2000] [--streams 1,8,32] [--skip-server]

Target: thousands of streamed tokens/s on one core, so the engine is never the bottleneck of a
stack test or a router/bench measurement.

Two measurements:
* core: the engine's scheduler + language model in this process (no Triton), greedy and sampled,
  for each stream count; tokens/s = tokens delivered / wall time.
* server: a real tritonserver (CPU build from nvidia-pytriton) serving the engine as a decoupled
  model; N requests streamed at once over one gRPC ModelStreamInfer stream, one response per token.
  Client and server share this machine's cores, so the figure is a floor.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from generator.contract import REFERENCE_CONTRACT_FILE, reference_engine_contract

ROOT = Path(__file__).resolve().parents[1]
ENGINE_DIR = ROOT / "templates" / "model_repo" / "reference_engine"
SERVER_START_TIMEOUT_S = 120.0
RESPONSE_TIMEOUT_S = 60.0

# Only the inputs/outputs this benchmark uses; the full contract is in the generator's templates.
CONFIG = """name: "bench_engine"
backend: "python"
max_batch_size: 64
model_transaction_policy {{ decoupled: true }}
input [
  {{ name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true optional: true }},
  {{ name: "input_lengths" data_type: TYPE_INT32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "request_output_len" data_type: TYPE_INT32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "streaming" data_type: TYPE_BOOL dims: [ 1 ] reshape: {{ shape: [ ] }} optional: true }},
  {{ name: "end_id" data_type: TYPE_INT32 dims: [ 1 ] reshape: {{ shape: [ ] }} optional: true }}
]
output [
  {{ name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] }},
  {{ name: "sequence_length" data_type: TYPE_INT32 dims: [ -1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters: {{ key: "gpt_model_type" value: {{ string_value: "inflight_fused_batching" }} }}
parameters: {{ key: "tokenizer_dir" value: {{ string_value: "{tokenizer}" }} }}
parameters: {{ key: "guided_decoding_backend" value: {{ string_value: "" }} }}
parameters: {{ key: "xgrammar_tokenizer_info_path" value: {{ string_value: "" }} }}
parameters: {{ key: "reference_kv_blocks" value: {{ string_value: "65536" }} }}
parameters: {{ key: "cancellation_check_period_ms" value: {{ string_value: "100" }} }}
parameters: {{ key: "stats_check_period_ms" value: {{ string_value: "100" }} }}
"""


class _CountingSink:
    def __init__(self) -> None:
        self.tokens = 0

    def deliver(self, sequence, tokens, final) -> bool:
        self.tokens += len(tokens)
        return True

    def is_cancelled(self) -> bool:
        return False

    def cancelled(self, sequence) -> None:
        pass

    def failed(self, message) -> None:
        pass


def bench_core(tokenizer_dir: Path, tokens: int, streams: int, sampled: bool) -> float:
    sys.path.insert(0, str(ENGINE_DIR))
    from reference_kv import KvBlockPool
    from reference_lm import ReferenceLM, SamplingParams, read_vocabulary
    from reference_scheduler import BatcherSettings, EngineRequest, InflightBatcher

    lm = ReferenceLM(read_vocabulary(str(tokenizer_dir)), seed=0)
    batcher = InflightBatcher(lm, KvBlockPool(65536, 32, True), BatcherSettings(max_active=streams))
    sampling = {"temperature": 0.8, "top_k": 50, "top_p": 0.95} if sampled else {}
    sinks = [_CountingSink() for _ in range(streams)]
    start = time.perf_counter()
    for i, sink in enumerate(sinks):
        params = SamplingParams(max_new_tokens=tokens, seed=i, end_id=None, **sampling)
        batcher.submit(EngineRequest(str(i), np.array([10 + i, 11, 12, 13], np.int32), params), sink)
    while batcher.step():
        pass
    elapsed = time.perf_counter() - start
    return sum(s.tokens for s in sinks) / elapsed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(repo: Path, log: Path):
    from generator.runtime.tritonserver import find_tritonserver, shm_prefix_option

    triton = find_tritonserver()
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    command = triton.command(
        repo,
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--disable-auto-complete-config",
        shm_prefix_option(f"tsrefbench{http}_"),
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=triton.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tritonserver exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("tritonserver did not become ready")
            time.sleep(0.2)
        yield f"127.0.0.1:{grpc}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def bench_server(grpc_url: str, tokens: int, streams: int) -> tuple[float, float]:
    """(tokens/s over all streams, mean time to first token in ms) for N concurrent streams."""
    import tritonclient.grpc as grpcclient

    events: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    client.start_stream(callback=lambda result, error: events.put((time.perf_counter(), result, error)))
    try:
        start = time.perf_counter()
        for i in range(streams):
            arrays = {
                "input_ids": np.array([[10 + i, 11, 12, 13]], np.int32),
                "input_lengths": np.array([[4]], np.int32),
                "request_output_len": np.array([[tokens]], np.int32),
                "end_id": np.array([[-1]], np.int32),
                "streaming": np.array([[True]]),
            }
            inputs = []
            for name, array in arrays.items():
                tensor = grpcclient.InferInput(
                    name, list(array.shape), "BOOL" if array.dtype == np.bool_ else "INT32"
                )
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            client.async_stream_infer("bench_engine", inputs, request_id=str(i))
        received: dict[str, int] = {}
        first: dict[str, float] = {}
        while sum(received.values()) < tokens * streams:
            when, result, error = events.get(timeout=RESPONSE_TIMEOUT_S)
            if error is not None:
                raise RuntimeError(str(error))
            request_id = result.get_response().id
            received[request_id] = received.get(request_id, 0) + 1
            first.setdefault(request_id, when)
        elapsed = time.perf_counter() - start
    finally:
        client.stop_stream()
        client.close()
    ttft_ms = 1000 * (sum(first.values()) / len(first) - start)
    return tokens * streams / elapsed, ttft_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer-dir", type=Path, default=ROOT / "examples" / "tokenizers" / "tiny-chat")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream")
    parser.add_argument("--streams", default="1,8,32", help="comma-separated concurrent stream counts")
    parser.add_argument("--skip-server", action="store_true", help="measure the in-process core only")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.streams.split(",")]
    tokenizer = args.tokenizer_dir.resolve()
    print(f"tritonstack reference engine speed — tokenizer {tokenizer}, {args.tokens} tokens per stream")
    print("core (in-process, no Triton):")
    for streams in counts:
        greedy = bench_core(tokenizer, args.tokens, streams, sampled=False)
        sampled = bench_core(tokenizer, args.tokens, streams, sampled=True)
        print(
            f"  {streams:>3} streams: greedy {greedy:>9,.0f} tok/s   sampled (T=0.8, top_k 50, top_p 0.95) {sampled:>9,.0f} tok/s"
        )
    if args.skip_server:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        version = repo / "bench_engine" / "1"
        version.mkdir(parents=True)
        for source in ENGINE_DIR.glob("*.py"):
            shutil.copy2(source, version / source.name)
        (repo / "bench_engine" / "config.pbtxt").write_text(CONFIG.format(tokenizer=tokenizer))
        # What the renderer writes beside every reference engine: the backend contract it obeys.
        (version / REFERENCE_CONTRACT_FILE).write_bytes(reference_engine_contract("1.x"))
        print("server (tritonserver, decoupled, one gRPC response per token, greedy):")
        with _server(repo, Path(tmp) / "server.log") as grpc_url:
            bench_server(grpc_url, 50, 1)  # warm-up
            for streams in counts:
                rate, ttft = bench_server(grpc_url, args.tokens, streams)
                print(f"  {streams:>3} streams: {rate:>9,.0f} tok/s   mean TTFT {ttft:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
