"""Support for the reference-engine tests: a tiny trained tokenizer, a model repository built
around hand-written ``tensorrt_llm`` config.pbtxt files (TRT-LLM 1.x and 0.19 tensor names, per
shared/reference/triton-trtllm-backend.md §2.1), and real tritonserver processes on free ports.

The generator will later render these configurations; until then they are written here, so the
engine is tested against the backend's contract rather than against our own renderer. No tests
live in this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from generator.runtime.tritonserver import find_tritonserver, shm_prefix_option
from tests.support import paths

ENGINE_DIR = paths.REPO_ROOT / "templates" / "model_repo" / "reference_engine"
SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_TIMEOUT_S = 20.0
POLL_TIMEOUT_S = 60.0  # waiting for a condition that must become true (never a speed assertion)

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a small language model answers questions about serving stacks",
    "triton serves models over http and grpc with streaming responses",
    "tokens flow from the prefill pool to the decode pool in disaggregated serving",
    "kv cache blocks are reused when two prompts share a prefix",
    "the router picks the least loaded replica for every request",
] * 4


def write_tokenizer(directory: Path) -> Path:
    """A byte-level BPE trained on CORPUS, with specials, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>", "<|user|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return directory


# ---------------------------------------------------------------------------------------------------
# config.pbtxt of the tensorrt_llm model, written by hand after §2.1 (backend python = reference engine)

_INPUTS = """
  { name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true optional: true },
  { name: "encoder_input_features" data_type: TYPE_FP16 dims: [ -1, -1 ] allow_ragged_batch: true optional: true },
  { name: "encoder_output_lengths" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "input_lengths" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "request_output_len" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "num_return_sequences" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "draft_input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true optional: true },
  { name: "end_id" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "pad_id" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "stop_words_list" data_type: TYPE_INT32 dims: [ 2, -1 ] allow_ragged_batch: true optional: true },
  { name: "bad_words_list" data_type: TYPE_INT32 dims: [ 2, -1 ] allow_ragged_batch: true optional: true },
  { name: "embedding_bias" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true optional: true },
  { name: "beam_width" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "runtime_top_k" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "runtime_top_p" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "len_penalty" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "repetition_penalty" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "{min_name}" data_type: TYPE_INT32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "presence_penalty" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "frequency_penalty" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "{seed_name}" data_type: TYPE_UINT64 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "return_log_probs" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "return_context_logits" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "return_generation_logits" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "return_perf_metrics" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },{num_token_inputs}
  { name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "stop" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "streaming" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "lora_task_id" data_type: TYPE_UINT64 dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "context_phase_params" data_type: TYPE_UINT8 dims: [ -1 ] allow_ragged_batch: true optional: true }
"""

_NUM_TOKEN_INPUTS = """
  { name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },
  { name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] reshape: { shape: [ ] } optional: true },"""

_OUTPUTS = """
  { name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] },
  { name: "sequence_length" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "cum_log_probs" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "output_log_probs" data_type: TYPE_FP32 dims: [ -1, -1 ] },
  { name: "context_logits" data_type: TYPE_FP32 dims: [ -1, -1 ] },
  { name: "generation_logits" data_type: TYPE_FP32 dims: [ -1, -1, -1 ] },
  { name: "batch_index" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "sequence_index" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "context_phase_params" data_type: TYPE_UINT8 dims: [ -1 ] },
  { name: "kv_cache_alloc_new_blocks" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "kv_cache_reused_blocks" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "kv_cache_alloc_total_blocks" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "arrival_time_ns" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "first_scheduled_time_ns" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "first_token_time_ns" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "last_token_time_ns" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "acceptance_rate" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "total_accepted_draft_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "total_draft_tokens" data_type: TYPE_INT32 dims: [ 1 ] }{num_token_outputs}
"""

_NUM_TOKEN_OUTPUTS = """,
  { name: "num_input_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_INT32 dims: [ 1 ] }"""

DEFAULT_PARAMETERS = {
    "max_beam_width": "1",
    "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
    "gpt_model_type": "inflight_fused_batching",
    "gpt_model_path": "${engine_dir}",  # unfilled on purpose: must count as unset
    # Read with no fallback by the backend (backend_contract.json below): present, unset on purpose.
    "xgrammar_tokenizer_info_path": "${xgrammar_tokenizer_info_path}",
    "guided_decoding_backend": "",
    "batch_scheduler_policy": "guaranteed_no_evict",
    "enable_kv_cache_reuse": "true",
    "exclude_input_in_output": "true",
    "cancellation_check_period_ms": "0",
    "stats_check_period_ms": "50",
    "max_input_len": "256",
    "max_output_len": "2048",
    "reference_seed": "7",
    "reference_kv_blocks": "512",
    "reference_tokens_per_block": "8",
}


# backend_contract.json as the renderer writes it from generator/contract/ (written by hand here, like
# the config.pbtxt above, so the engine is tested against upstream rather than against our renderer).
_MIS = "https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc"
RESPONSE_ORDER = [
    # ModelInstanceState::fillTritonResponse, in the order it adds tensors (_MIS#L1079-L1306; 1.x adds
    # num_input_tokens / num_output_tokens after context_phase_params).
    "output_ids",
    "sequence_length",
    "context_logits",
    "generation_logits",
    "output_log_probs",
    "cum_log_probs",
    "batch_index",
    "sequence_index",
    "context_phase_params",
    "num_input_tokens",
    "num_output_tokens",
    "kv_cache_alloc_new_blocks",
    "kv_cache_reused_blocks",
    "kv_cache_alloc_total_blocks",
    "arrival_time_ns",
    "first_scheduled_time_ns",
    "first_token_time_ns",
    "last_token_time_ns",
    "acceptance_rate",
    "total_accepted_draft_tokens",
    "total_draft_tokens",
]


# Outputs only a set input flag brings (fillTritonResponse, _MIS#L1079-L1306).
FLAGGED_OUTPUTS = {
    "return_log_probs": ["output_log_probs", "cum_log_probs"],
    "return_context_logits": ["context_logits"],
    "return_generation_logits": ["generation_logits"],
    "return_num_input_tokens": ["num_input_tokens"],
    "return_num_output_tokens": ["num_output_tokens"],
    "return_perf_metrics": [
        "kv_cache_alloc_new_blocks",
        "kv_cache_reused_blocks",
        "kv_cache_alloc_total_blocks",
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
    ],
}


def backend_contract(era: str = "1.x") -> dict[str, object]:
    return {
        "era": era,
        "required_parameters": [
            {"name": "gpt_model_type", "source": f"{_MIS}#L59-L79"},
            {"name": "tokenizer_dir", "source": f"{_MIS}#L413"},
            {"name": "xgrammar_tokenizer_info_path", "source": f"{_MIS}#L414"},
            {"name": "guided_decoding_backend", "source": f"{_MIS}#L415"},
        ],
        "parameters": {
            "gpt_model_type": {
                "format": "enum",
                "values": ["V1", "v1", "inflight_batching", "inflight_fused_batching"],
            },
            "tokenizer_dir": {"format": "path"},
            "xgrammar_tokenizer_info_path": {"format": "path"},
            "guided_decoding_backend": {"format": "enum", "values": ["xgrammar"], "unset_allowed": True},
            "batch_scheduler_policy": {
                "format": "enum",
                "values": ["max_utilization", "guaranteed_no_evict"],
            },
            "enable_kv_cache_reuse": {"format": "bool"},
            "exclude_input_in_output": {"format": "bool"},
            "max_beam_width": {"format": "int"},
            "cancellation_check_period_ms": {"format": "int"},
            "stats_check_period_ms": {"format": "int"},
            "max_tokens_in_paged_kv_cache": {"format": "int"},
            "kv_cache_free_gpu_mem_fraction": {"format": "float"},
            "gpu_device_ids": {"format": "int_list"},
        },
        "response_order": RESPONSE_ORDER,
        "flagged_outputs": FLAGGED_OUTPUTS,
    }


def tensorrt_llm_config(
    name: str,
    *,
    era: str = "1.x",
    decoupled: bool = True,
    max_batch_size: int = 16,
    parameters: dict[str, str],
) -> str:
    """The ``tensorrt_llm`` model's config.pbtxt with ``backend: "python"`` (the reference engine)."""
    if era == "1.x":
        names = {"min_name": "min_tokens", "seed_name": "seed", "num_token_inputs": _NUM_TOKEN_INPUTS}
        outputs = {"num_token_outputs": _NUM_TOKEN_OUTPUTS}
    else:
        names = {"min_name": "min_length", "seed_name": "random_seed", "num_token_inputs": ""}
        outputs = {"num_token_outputs": ""}
    inputs = _INPUTS
    for key, value in names.items():
        inputs = inputs.replace("{" + key + "}", value)
    output_text = _OUTPUTS.replace("{num_token_outputs}", outputs["num_token_outputs"])
    params = "\n".join(
        f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in parameters.items()
    )
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        f"model_transaction_policy {{ decoupled: {'true' if decoupled else 'false'} }}\n"
        f"dynamic_batching {{ preferred_batch_size: [ {max_batch_size} ] max_queue_delay_microseconds: 0 }}\n"
        f"input [{inputs}]\noutput [{output_text}]\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        f"{params}\n"
    )


def add_engine_model(
    repo: Path,
    name: str,
    tokenizer_dir: Path,
    *,
    era: str = "1.x",
    decoupled: bool = True,
    max_batch_size: int = 16,
    contract: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
    **overrides: str,
) -> Path:
    """One reference-engine model: config.pbtxt + 1/ with the engine's files copied verbatim and the
    backend contract beside them (``contract``; default: backend_contract(era)). ``drop`` removes
    parameters from the defaults."""
    model_dir = repo / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    for source in sorted(ENGINE_DIR.glob("*.py")):
        shutil.copy2(source, version_dir / source.name)
    (version_dir / "backend_contract.json").write_text(json.dumps(contract or backend_contract(era)))
    # A relative tokenizer_dir is relative to the model's directory, as the generator writes it.
    parameters = {
        **DEFAULT_PARAMETERS,
        "tokenizer_dir": os.path.relpath(tokenizer_dir, model_dir),
        **overrides,
    }
    for key in drop:
        parameters.pop(key)
    (model_dir / "config.pbtxt").write_text(
        tensorrt_llm_config(
            name, era=era, decoupled=decoupled, max_batch_size=max_batch_size, parameters=parameters
        )
    )
    return model_dir


# ---------------------------------------------------------------------------------------------------
# tritonserver


@dataclass(frozen=True)
class Server:
    http: str  # "127.0.0.1:port"
    grpc: str
    metrics: str
    log: Path

    def metrics_text(self) -> str:
        return httpx.get(f"http://{self.metrics}/metrics", timeout=POLL_TIMEOUT_S).text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(repo: Path, log: Path, *extra_args: str) -> Iterator[Server]:
    """Start a real tritonserver on free ports; always stop its whole process group."""
    triton = find_tritonserver()
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    command = triton.command(
        repo,
        f"--http-port={ports['http']}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        "--disable-auto-complete-config",
        "--log-verbose=0",
        "--metrics-interval-ms=200",
        # Each server needs its own python-backend shared-memory names: several run on this machine.
        shm_prefix_option(f"tsrefeng{os.getpid()}_{ports['http']}_"),
        *extra_args,
    )
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, env=triton.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(
        http=f"127.0.0.1:{ports['http']}",
        grpc=f"127.0.0.1:{ports['grpc']}",
        metrics=f"127.0.0.1:{ports['metrics']}",
        log=log,
    )
    try:
        _wait_ready(server, process)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Server, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"tritonserver exited with {process.returncode}:\n{server.log.read_text()[-4000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{server.http}/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"tritonserver not ready after {SERVER_START_TIMEOUT_S}s:\n{server.log.read_text()[-4000:]}"
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------------------------------------------
# requests


def generate_body(prompt: list[int], max_tokens: int, **inputs: object) -> dict[str, object]:
    """JSON for /v2/models/<m>/generate[_stream]: keys are input names, except request parameters."""
    return {"input_ids": prompt, "input_lengths": [len(prompt)], "request_output_len": [max_tokens], **inputs}


def generate(server: Server, model: str, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(
        f"http://{server.http}/v2/models/{model}/generate", json=body, timeout=POLL_TIMEOUT_S
    )
    if response.status_code != 200:
        raise GenerateError(response.status_code, response.text)
    return response.json()


def generate_stream(server: Server, model: str, body: dict[str, object]) -> list[dict[str, object]]:
    """All SSE events of one /generate_stream call, parsed."""
    events = []
    with httpx.stream(
        "POST", f"http://{server.http}/v2/models/{model}/generate_stream", json=body, timeout=POLL_TIMEOUT_S
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[len("data:") :])
                if "error" in event:
                    raise GenerateError(response.status_code, event["error"])
                events.append(event)
    return events


class GenerateError(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text
        super().__init__(f"{status}: {text}")


def flat_ids(event: dict[str, object]) -> list[int]:
    return [int(t) for t in np.asarray(event["output_ids"]).reshape(-1)]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels...}`` in a Prometheus exposition (labels may be a subset)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        found = dict(part.split("=", 1) for part in _label_parts(head))
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return None


def _label_parts(head: str) -> list[str]:
    if "{" not in head:
        return []
    inner = head[head.index("{") + 1 : head.rindex("}")]
    return [p for p in inner.split(",") if p]


def wait_for(condition, what: str, timeout: float = POLL_TIMEOUT_S):
    """Poll until ``condition()`` is truthy; fail naming ``what`` (not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
