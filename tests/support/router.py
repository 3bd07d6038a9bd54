"""Support for the router tests: a word tokenizer, a small python-backend model set, and a
fixture-friendly way to start real tritonserver processes on free ports.

The python model below is a test double of the *ensemble contract* the generator renders (text in,
streamed text out, ``request_type`` context_only/generation_only, ``context_phase_params``), served
by a real tritonserver. It lets the router tests run before, and independently of, the rendered
reference-engine stack; the quickstart-stack tests use the real thing. No tests live here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from generator.router.config import Endpoint
from generator.router.replicas import Replica
from generator.runtime.tritonserver import find_tritonserver, remove_shm_regions, shm_prefix_option

WORDS = [f"w{i}" for i in range(64)]
SPECIALS = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_word_tokenizer(directory: Path) -> Path:
    """A whitespace word-level tokenizer whose vocabulary is WORDS (+ specials), with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return directory


MODEL_PY = r'''
"""Test double of the rendered ensemble contract (see tests/support/router.py)."""
import json, time
import numpy as np
import triton_python_backend_utils as pb_utils

WORDS = [f"w{i}" for i in range(64)]


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(params.get("token_delay_s", {}).get("string_value", "0"))
        self.role = params.get("role", {}).get("string_value", "aggregated")
        self.family = pb_utils.MetricFamily(
            name="tritonstack_reference_engine_requests",
            description="requests by outcome (router test double)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.outcomes = {o: self.family.Metric(labels={"model": args["model_name"], "outcome": o})
                         for o in ("completed", "cancelled", "failed")}

    def _get(self, request, name, default=None):
        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            return default
        return t.as_numpy().reshape(-1)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                outcome = self._serve(request, sender)
            except Exception as exc:  # the test double reports every failure to its caller
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                outcome = "failed"
            self.outcomes[outcome].increment(1)
        return None

    def _serve(self, request, sender):
        params = json.loads(request.parameters() or "{}")
        request_type = params.get("request_type", "context_and_generation")
        if self.role == "prefill" and request_type != "context_only":
            raise ValueError("prefill model needs request_type context_only")
        if self.role == "decode" and request_type != "generation_only":
            raise ValueError("decode model needs request_type generation_only")
        messages = self._get(request, "messages")
        if messages is not None and messages[0]:
            prompt = " ".join(m["content"] for m in json.loads(messages[0].decode()))
        else:
            prompt = self._get(request, "text_input")[0].decode()
        max_tokens = int(self._get(request, "max_tokens")[0])
        stream = bool(self._get(request, "stream", [False])[0])
        stops = [s.decode() for s in self._get(request, "stop_words", [])]
        want_counts = bool(self._get(request, "return_num_output_tokens", [False])[0])
        prompt_tokens = len(prompt.split())
        seed = sum(prompt.encode()) % len(WORDS)
        tokens = []
        for i in range(max_tokens):
            word = WORDS[(seed + 7 * i) % len(WORDS)]
            tokens.append(word)
            if word in stops:
                break
        start = 0
        if request_type == "context_only":
            if self.delay:
                time.sleep(self.delay)
            if sender.is_cancelled():
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return "cancelled"
            first = tokens[:1]
            state = json.dumps({"prompt": prompt, "first": first}).encode()
            outs = [pb_utils.Tensor("text_output", np.array([" " + first[0]], dtype=object)),
                    pb_utils.Tensor("context_phase_params", np.frombuffer(state, dtype=np.uint8)),
                    pb_utils.Tensor("output_ids", np.array([[len(WORDS) + 6]], dtype=np.int32))]
            sender.send(pb_utils.InferenceResponse(output_tensors=outs),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return "completed"
        if request_type == "generation_only":
            state = json.loads(bytes(self._get(request, "context_phase_params")).decode())
            if state["prompt"] != prompt:
                raise ValueError("context_phase_params belong to another prompt")
        pieces = [" " + t for t in tokens] if stream else [" " + " ".join(tokens)]
        for n, piece in enumerate(pieces):
            if self.delay:
                time.sleep(self.delay)
            if sender.is_cancelled():
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return "cancelled"
            outs = [pb_utils.Tensor("text_output", np.array([piece], dtype=object))]
            if want_counts and n == len(pieces) - 1:
                outs += [pb_utils.Tensor("num_input_tokens", np.array([prompt_tokens], dtype=np.int32)),
                         pb_utils.Tensor("num_output_tokens", np.array([len(tokens)], dtype=np.int32))]
            sender.send(pb_utils.InferenceResponse(output_tensors=outs))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return "completed"
'''

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [
  {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "messages" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true }},
  {{ name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true }},
  {{ name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true }},
  {{ name: "stop_words" data_type: TYPE_STRING dims: [ -1 ] optional: true }},
  {{ name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "context_phase_params" data_type: TYPE_UINT8 dims: [ -1 ] optional: true }}
]
output [
  {{ name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }},
  {{ name: "num_input_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "num_output_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "context_phase_params" data_type: TYPE_UINT8 dims: [ -1 ] }},
  {{ name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] }}
]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters {{ key: "role" value: {{ string_value: "{role}" }} }}
parameters {{ key: "token_delay_s" value: {{ string_value: "{delay}" }} }}
"""


def write_model(repo: Path, name: str, role: str, delay: float = 0.0, instances: int = 4) -> None:
    directory = repo / name
    (directory / "1").mkdir(parents=True, exist_ok=True)
    (directory / "1" / "model.py").write_text(MODEL_PY)
    (directory / "config.pbtxt").write_text(
        CONFIG.format(name=name, role=role, delay=delay, instances=instances)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningTriton:
    process: subprocess.Popen
    endpoint: Endpoint
    repo: Path
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        remove_shm_regions(_shm_prefix(self.endpoint))


def _shm_prefix(endpoint: Endpoint) -> str:
    return f"tsrouter{os.getpid()}_{endpoint.http}_"


def spawn_triton(repo: Path, log: Path, endpoint: Endpoint | None = None) -> RunningTriton:
    """Start tritonserver on free ports (or the ports of ``endpoint``); see wait_ready."""
    install = find_tritonserver()
    endpoint = endpoint or Endpoint(host="127.0.0.1", http=free_port(), grpc=free_port(), metrics=free_port())
    command = install.command(
        repo,
        f"--http-port={endpoint.http}",
        f"--grpc-port={endpoint.grpc}",
        f"--metrics-port={endpoint.metrics}",
        "--disable-auto-complete-config",
        shm_prefix_option(_shm_prefix(endpoint)),
    )
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, env=install.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    return RunningTriton(process, endpoint, repo, log)


def wait_ready(running: RunningTriton, timeout: float = 120.0) -> RunningTriton:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"tritonserver exited; log: {running.log}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{running.endpoint.http}/v2/health/ready", timeout=1).status_code
                == 200
            ):
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    running.stop()
    raise RuntimeError(f"tritonserver not ready in {timeout}s; log: {running.log}")


def start_triton(repo: Path, log: Path, endpoint: Endpoint | None = None) -> RunningTriton:
    return wait_ready(spawn_triton(repo, log, endpoint))


@contextlib.contextmanager
def tritons(repos: list[Path], logdir: Path) -> Iterator[list[RunningTriton]]:
    started: list[RunningTriton] = []
    try:
        for i, repo in enumerate(repos):
            started.append(spawn_triton(repo, logdir / f"triton-{i}.log"))
        for running in started:
            wait_ready(running)
        yield started
    finally:
        for running in started:
            running.stop()


def engine_counter(endpoint: Endpoint, outcome: str) -> float:
    """Sum of tritonstack_reference_engine_requests{outcome=...} over the replica's models."""
    text = httpx.get(f"http://127.0.0.1:{endpoint.metrics}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tritonstack_reference_engine_requests") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def dump(data: object) -> str:
    return json.dumps(data, indent=1)


@dataclass
class RunningRouter:
    process: subprocess.Popen
    url: str

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_router(
    config: Path, env: dict[str, str] | None = None, *extra: str, timeout: float = 60.0
) -> RunningRouter:
    """`tritonstack router` as a real process on a free port; returns once it printed its URL."""
    import selectors

    command = [
        sys.executable,
        "-m",
        "generator.cli",
        "router",
        "--config",
        str(config),
        "--port",
        "0",
        *extra,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, start_new_session=True
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if line.startswith("tritonstack router: "):
                return RunningRouter(process, line.split()[2])
            if not line and process.poll() is not None:
                break
    RunningRouter(process, "").stop(signal.SIGKILL)
    raise RuntimeError("the router did not start")


def replicas(n: int, pool: str = "a") -> list[Replica]:
    """``n`` ready replicas of ``pool`` at made-up addresses, for tests that never connect."""
    return [
        Replica(pool, Endpoint(host=f"10.0.0.{i}", http=8000, grpc=8001, metrics=8002), ready=True)
        for i in range(n)
    ]
