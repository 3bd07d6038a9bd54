"""preprocessing / postprocessing / tensorrt_llm_bls inside a real tritonserver (CPU build).

The repository is built here by hand: config.pbtxt files following reference §2.2/2.3/2.5, our three
model.py files with their helper modules, and in place of the engine a test fixture,
``FIXTURE_TOKENS_MODEL``: a decoupled python model with the token-level interface of ``tensorrt_llm``
that answers every prompt with the same scripted token ids (one token per response when streaming),
and writes what it received (input ids, request parameters, stop requests) to a JSON-lines log the
tests read back. Text in → text out is checked through ensembles and through the BLS, streaming and
not, for a byte-level tokenizer (tiny-chat) and a SentencePiece-style one (tiny-sp).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from transformers import AutoTokenizer

from generator.runtime.tritonserver import find_tritonserver, shm_prefix_option
from tests.support import paths

ROOT = paths.REPO_ROOT
TEMPLATES = ROOT / "templates" / "model_repo"
TOKENIZERS = ROOT / "examples" / "tokenizers"
REPLY = "Hello world! Grüße aus 東京, naïve 🚀 龍🦀 and   spaces."
MAX_INPUT_LEN = 64
SERVER_READY_TIMEOUT_S = 240.0
EVENT_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 120.0

# A test fixture standing in for the engine: NOT an engine and not the reference engine. It answers
# with the token ids of its `reply_text` (+ eos), truncated to request_output_len; request parameters
# `fixture_repeat` (cycle the reply) and `fixture_delay_s` (pause per token) make long, slow streams.
FIXTURE_TOKENS_MODEL = r"""
import itertools
import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"], local_files_only=True)
        self.reply = tokenizer.encode(params["reply_text"], add_special_tokens=False) + [tokenizer.eos_token_id]
        self.log_path = params["log_path"]
        self.lock = threading.RLock()
        self.stopped = set()

    def log(self, **event):
        with self.lock, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(dict(event, t=round(time.time(), 3))) + "\n")

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.serve, args=(request,), daemon=True).start()
        return None

    def serve(self, request):
        sender = request.get_response_sender()
        try:
            self.answer(request, sender)
        except Exception as error:
            self.log(event="error", id=request.request_id(), error=repr(error))
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(repr(error))), flags=FINAL)

    def answer(self, request, sender):
        def value(name, default=None):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return default if tensor is None else tensor.as_numpy()

        request_id = request.request_id()
        parameters = json.loads(request.parameters() or "{}")
        if value("stop") is not None and bool(value("stop").reshape(-1)[0]):
            with self.lock:
                self.stopped.add(request_id)
            self.log(event="stop", id=request_id)
            sender.send(flags=FINAL)
            return
        input_ids = value("input_ids")
        lengths = value("input_lengths").reshape(-1)
        output_len = int(value("request_output_len").reshape(-1)[0])
        streaming = value("streaming") is not None and bool(value("streaming").reshape(-1)[0])
        exclude = value("exclude_input_in_output")
        exclude = True if exclude is None else bool(exclude.reshape(-1)[0])
        self.log(
            event="request", id=request_id, parameters=parameters, streaming=streaming,
            inputs=sorted(t.name() for t in request.inputs()),
            input_ids=[input_ids[row, : int(lengths[row])].tolist() for row in range(input_ids.shape[0])],
        )
        if parameters.get("fixture_repeat"):
            reply = [self.reply[i % (len(self.reply) - 1)] for i in range(output_len)]
        else:
            reply = self.reply[:output_len]
        delay = float(parameters.get("fixture_delay_s", 0))
        batch = input_ids.shape[0]
        counts = [
            pb_utils.Tensor("num_input_tokens", lengths.astype(np.int32).reshape(batch, 1)),
            pb_utils.Tensor("num_output_tokens", np.full((batch, 1), len(reply), dtype=np.int32)),
        ]
        perf = value("return_perf_metrics")
        if perf is not None and bool(perf.reshape(-1)[0]):
            arrival = np.array([[time.time_ns() + row] for row in range(batch)], dtype=np.int64)
            counts.append(pb_utils.Tensor("arrival_time_ns", arrival))
        if not streaming:
            rows = [(([] if exclude else input_ids[row, : int(lengths[row])].tolist()) + reply) for row in range(batch)]
            width = max(len(r) for r in rows)
            ids = np.zeros((batch, 1, width), dtype=np.int32)
            for row, tokens in enumerate(rows):
                ids[row, 0, : len(tokens)] = tokens
            seq = np.array([[len(r)] for r in rows], dtype=np.int32)
            sender.send(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("output_ids", ids), pb_utils.Tensor("sequence_length", seq), *counts]), flags=FINAL)
            return
        for index, token in enumerate(reply):
            if request.is_cancelled():
                self.log(event="cancelled", id=request_id)
                break
            with self.lock:
                if request_id in self.stopped:
                    self.log(event="stopped", id=request_id, after=index)
                    break
            if delay:
                time.sleep(delay)
            sender.send(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("output_ids", np.array([[[token]]], dtype=np.int32)),
                pb_utils.Tensor("sequence_length", np.array([[1]], dtype=np.int32)), *counts]))
        sender.send(flags=FINAL)
"""


def _model_config(name: str, body: str) -> str:
    return f'name: "{name}"\n{body.strip()}\n'


def _parameters(**values: object) -> str:
    return "\n".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}' for key, value in values.items()
    )


def _io(
    kind: str, name: str, data_type: str, dims: str, optional: bool = False, reshape: bool = False
) -> str:
    extra = " optional: true" if optional else ""
    extra += " reshape: { shape: [ ] }" if reshape else ""
    return f'{kind} {{ name: "{name}" data_type: {data_type} dims: [ {dims} ]{extra} }}'


def preprocessing_config(name: str, tokenizer_dir: Path, max_queue_delay_us: int = 0) -> str:
    inputs = [
        _io("input", "QUERY", "TYPE_STRING", "1"),
        _io("input", "REQUEST_OUTPUT_LEN", "TYPE_INT32", "1"),
        _io("input", "MESSAGES", "TYPE_STRING", "1", optional=True),
        _io("input", "DECODER_QUERY", "TYPE_STRING", "1", optional=True),
        _io("input", "BAD_WORDS_DICT", "TYPE_STRING", "-1", optional=True),
        _io("input", "STOP_WORDS_DICT", "TYPE_STRING", "-1", optional=True),
        _io("input", "EMBEDDING_BIAS_WORDS", "TYPE_STRING", "-1", optional=True),
        _io("input", "EMBEDDING_BIAS_WEIGHTS", "TYPE_FP32", "-1", optional=True),
        _io("input", "END_ID", "TYPE_INT32", "1", optional=True),
        _io("input", "PAD_ID", "TYPE_INT32", "1", optional=True),
        _io("input", "PROMPT_TABLE_EXTRA_ID", "TYPE_UINT64", "1", optional=True),
    ]
    outputs = [
        _io("output", "INPUT_ID", "TYPE_INT32", "-1"),
        _io("output", "REQUEST_INPUT_LEN", "TYPE_INT32", "1"),
        _io("output", "DECODER_INPUT_ID", "TYPE_INT32", "-1"),
        _io("output", "REQUEST_DECODER_INPUT_LEN", "TYPE_INT32", "1"),
        _io("output", "BAD_WORDS_IDS", "TYPE_INT32", "2, -1"),
        _io("output", "STOP_WORDS_IDS", "TYPE_INT32", "2, -1"),
        _io("output", "EMBEDDING_BIAS", "TYPE_FP32", "-1"),
        _io("output", "REQUEST_OUTPUT_LEN", "TYPE_INT32", "-1"),
        _io("output", "OUT_END_ID", "TYPE_INT32", "1"),
        _io("output", "OUT_PAD_ID", "TYPE_INT32", "1"),
        _io("output", "OUT_PROMPT_TABLE_EXTRA_IDS", "TYPE_UINT64", "-1"),
        _io("output", "OUT_RETURN_PERF_METRICS", "TYPE_BOOL", "1"),
    ]
    return _model_config(
        name,
        f"""
backend: "python"
max_batch_size: 8
dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}
{chr(10).join(inputs + outputs)}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{_parameters(tokenizer_dir=tokenizer_dir, add_special_tokens="true", max_input_len=MAX_INPUT_LEN)}
""",
    )


def postprocessing_config(name: str, tokenizer_dir: Path) -> str:
    return _model_config(
        name,
        f"""
backend: "python"
max_batch_size: 8
dynamic_batching {{ }}
{_io("input", "TOKENS_BATCH", "TYPE_INT32", "-1, -1")}
{_io("input", "SEQUENCE_LENGTH", "TYPE_INT32", "-1")}
{_io("input", "STREAM", "TYPE_BOOL", "1", optional=True)}
{_io("input", "ARRIVAL_TIME_NS", "TYPE_INT64", "1", optional=True)}
{_io("output", "OUTPUT", "TYPE_STRING", "-1")}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{_parameters(tokenizer_dir=tokenizer_dir, skip_special_tokens="true", stream_state_capacity=64, stream_state_idle_seconds=300)}
""",
    )


def fixture_tokens_config(name: str, tokenizer_dir: Path, log_path: Path) -> str:
    inputs = [
        _io("input", "input_ids", "TYPE_INT32", "-1", optional=True),
        _io("input", "input_lengths", "TYPE_INT32", "1", reshape=True),
        _io("input", "request_output_len", "TYPE_INT32", "1", reshape=True),
        *(
            _io("input", n, t, d, optional=True)
            for n, t, d in [
                ("end_id", "TYPE_INT32", "1"),
                ("pad_id", "TYPE_INT32", "1"),
                ("stop_words_list", "TYPE_INT32", "2, -1"),
                ("bad_words_list", "TYPE_INT32", "2, -1"),
                ("embedding_bias", "TYPE_FP32", "-1"),
                ("runtime_top_k", "TYPE_INT32", "1"),
                ("runtime_top_p", "TYPE_FP32", "1"),
                ("temperature", "TYPE_FP32", "1"),
                ("seed", "TYPE_UINT64", "1"),
                ("exclude_input_in_output", "TYPE_BOOL", "1"),
                ("return_num_input_tokens", "TYPE_BOOL", "1"),
                ("return_num_output_tokens", "TYPE_BOOL", "1"),
                ("return_perf_metrics", "TYPE_BOOL", "1"),
                ("streaming", "TYPE_BOOL", "1"),
                ("stop", "TYPE_BOOL", "1"),
                ("context_phase_params", "TYPE_UINT8", "-1"),
            ]
        ),
    ]
    outputs = [
        _io("output", "output_ids", "TYPE_INT32", "-1, -1"),
        _io("output", "sequence_length", "TYPE_INT32", "-1"),
        _io("output", "num_input_tokens", "TYPE_INT32", "1"),
        _io("output", "num_output_tokens", "TYPE_INT32", "1"),
        _io("output", "arrival_time_ns", "TYPE_INT64", "1"),
    ]
    return _model_config(
        name,
        f"""
backend: "python"
max_batch_size: 8
model_transaction_policy {{ decoupled: true }}
{chr(10).join(inputs + outputs)}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{_parameters(tokenizer_dir=tokenizer_dir, reply_text=REPLY, log_path=log_path)}
""",
    )


ENSEMBLE_INPUTS = [
    ("text_input", "TYPE_STRING", "1", False),
    ("max_tokens", "TYPE_INT32", "1", False),
    ("messages", "TYPE_STRING", "1", True),
    ("stream", "TYPE_BOOL", "1", True),
    ("bad_words", "TYPE_STRING", "-1", True),
    ("stop_words", "TYPE_STRING", "-1", True),
    ("end_id", "TYPE_INT32", "1", True),
    ("top_k", "TYPE_INT32", "1", True),
    ("temperature", "TYPE_FP32", "1", True),
    ("seed", "TYPE_UINT64", "1", True),
    ("exclude_input_in_output", "TYPE_BOOL", "1", True),
    ("return_num_input_tokens", "TYPE_BOOL", "1", True),
    ("return_num_output_tokens", "TYPE_BOOL", "1", True),
]


def _map(kind: str, pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f'      {kind} {{ key: "{key}" value: "{value}" }}' for key, value in pairs)


def ensemble_config(name: str, pre: str, engine: str, post: str, key_by_arrival_time: bool = True) -> str:
    """The generator's wiring: preprocessing asks the engine for perf metrics (OUT_RETURN_PERF_METRICS)
    and the engine's arrival_time_ns tells postprocessing which stream a chunk belongs to. Without
    it (key_by_arrival_time=False) postprocessing has only the request id."""
    inputs = [_io("input", n, t, d, optional=o) for n, t, d, o in ENSEMBLE_INPUTS]
    outputs = [
        _io("output", "text_output", "TYPE_STRING", "-1"),
        _io("output", "num_input_tokens", "TYPE_INT32", "1"),
        _io("output", "num_output_tokens", "TYPE_INT32", "1"),
    ]
    pre_in = [
        ("QUERY", "text_input"),
        ("REQUEST_OUTPUT_LEN", "max_tokens"),
        ("MESSAGES", "messages"),
        ("BAD_WORDS_DICT", "bad_words"),
        ("STOP_WORDS_DICT", "stop_words"),
        ("END_ID", "end_id"),
    ]
    pre_out = [
        ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"),
        ("INPUT_ID", "_INPUT_ID"),
        ("REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"),
        ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
        ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"),
        ("OUT_END_ID", "_PREPROCESSOR_END_ID"),
        ("OUT_PAD_ID", "_PREPROCESSOR_PAD_ID"),
    ]
    if key_by_arrival_time:
        pre_out.append(("OUT_RETURN_PERF_METRICS", "_RETURN_PERF_METRICS"))
    engine_in = [
        ("input_ids", "_INPUT_ID"),
        ("input_lengths", "_REQUEST_INPUT_LEN"),
        ("request_output_len", "_REQUEST_OUTPUT_LEN"),
        ("end_id", "_PREPROCESSOR_END_ID"),
        ("pad_id", "_PREPROCESSOR_PAD_ID"),
        ("stop_words_list", "_STOP_WORDS_IDS"),
        ("bad_words_list", "_BAD_WORDS_IDS"),
        ("runtime_top_k", "top_k"),
        ("temperature", "temperature"),
        ("seed", "seed"),
        ("exclude_input_in_output", "exclude_input_in_output"),
        ("return_num_input_tokens", "return_num_input_tokens"),
        ("return_num_output_tokens", "return_num_output_tokens"),
        ("streaming", "stream"),
    ]
    if key_by_arrival_time:
        engine_in.append(("return_perf_metrics", "_RETURN_PERF_METRICS"))
    engine_out = [
        ("output_ids", "_TOKENS_BATCH"),
        ("sequence_length", "_SEQUENCE_LENGTH"),
        ("num_input_tokens", "num_input_tokens"),
        ("num_output_tokens", "num_output_tokens"),
    ]
    if key_by_arrival_time:
        engine_out.append(("arrival_time_ns", "_ARRIVAL_TIME_NS"))
    # No STREAM <- stream here: Triton rejects a step mixing inputs of a decoupled model with others.
    post_in = [("TOKENS_BATCH", "_TOKENS_BATCH"), ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH")]
    if key_by_arrival_time:
        post_in.append(("ARRIVAL_TIME_NS", "_ARRIVAL_TIME_NS"))
    post_out = [("OUTPUT", "text_output")]
    steps = []
    for model, ins, outs in [
        (pre, pre_in, pre_out),
        (engine, engine_in, engine_out),
        (post, post_in, post_out),
    ]:
        steps.append(
            f'    {{\n      model_name: "{model}"\n      model_version: -1\n'
            f"{_map('input_map', ins)}\n{_map('output_map', outs)}\n    }}"
        )
    return _model_config(
        name,
        f"""
platform: "ensemble"
max_batch_size: 8
{chr(10).join(inputs + outputs)}
ensemble_scheduling {{
  step [
{",".join(steps)}
  ]
}}
""",
    )


def bls_config(
    name: str, pre: str, engine: str, post: str, accumulate_tokens: bool, decoupled: bool = True
) -> str:
    inputs = [_io("input", n, t, d, optional=o) for n, t, d, o in ENSEMBLE_INPUTS]
    inputs.append(_io("input", "context_phase_params", "TYPE_UINT8", "-1", optional=True))
    outputs = [
        _io("output", "text_output", "TYPE_STRING", "-1"),
        _io("output", "num_input_tokens", "TYPE_INT32", "1"),
        _io("output", "num_output_tokens", "TYPE_INT32", "1"),
    ]
    return _model_config(
        name,
        f"""
backend: "python"
max_batch_size: 8
model_transaction_policy {{ decoupled: {str(decoupled).lower()} }}
{chr(10).join(inputs + outputs)}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{
            _parameters(
                preprocessing_model_name=pre,
                tensorrt_llm_model_name=engine,
                postprocessing_model_name=post,
                accumulate_tokens=str(accumulate_tokens).lower(),
                max_concurrent_requests=8,
            )
        }
""",
    )


def _python_model(repo: Path, name: str, config: str, sources: list[Path]) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config, encoding="utf-8")
    for source in sources:
        shutil.copy2(source, version / source.name)


def build_repository(repo: Path, log_path: Path) -> None:
    shared = sorted((TEMPLATES / "shared").glob("*.py"))
    pre_sources = [
        TEMPLATES / "preprocessing" / "model.py",
        TEMPLATES / "preprocessing" / "prompt_encoder.py",
        *shared,
    ]
    post_sources = [TEMPLATES / "postprocessing" / "model.py", *shared]
    bls_sources = [TEMPLATES / "tensorrt_llm_bls" / "model.py", *shared]
    for model, accumulate in [("tiny-chat", False), ("tiny-sp", True)]:
        tokenizer_dir = TOKENIZERS / model
        pre, engine, post = f"{model}_preprocessing", f"{model}_tokens", f"{model}_postprocessing"
        _python_model(repo, pre, preprocessing_config(pre, tokenizer_dir), pre_sources)
        _python_model(repo, post, postprocessing_config(post, tokenizer_dir), post_sources)
        fixture_dir = repo / engine / "1"
        fixture_dir.mkdir(parents=True)
        (fixture_dir / "model.py").write_text(FIXTURE_TOKENS_MODEL, encoding="utf-8")
        (repo / engine / "config.pbtxt").write_text(fixture_tokens_config(engine, tokenizer_dir, log_path))
        ensemble = repo / f"{model}_ensemble"
        (ensemble / "1").mkdir(parents=True)
        (ensemble / "config.pbtxt").write_text(ensemble_config(f"{model}_ensemble", pre, engine, post))
        (repo / f"{model}_ensemble_by_id" / "1").mkdir(parents=True)
        (repo / f"{model}_ensemble_by_id" / "config.pbtxt").write_text(
            ensemble_config(f"{model}_ensemble_by_id", pre, engine, post, key_by_arrival_time=False)
        )
        _python_model(
            repo, f"{model}_bls", bls_config(f"{model}_bls", pre, engine, post, accumulate), bls_sources
        )
    _python_model(
        repo,
        "tiny-chat_bls_sync",
        bls_config(
            "tiny-chat_bls_sync",
            "tiny-chat_preprocessing",
            "tiny-chat_tokens",
            "tiny-chat_postprocessing",
            accumulate_tokens=False,
            decoupled=False,
        ),
        bls_sources,
    )
    # tiny-base has the same vocabulary as tiny-chat but no chat template: its own preprocessing in
    # front of tiny-chat's fixture and postprocessing. A batching variant waits to collect requests.
    _python_model(
        repo,
        "tiny-base_preprocessing",
        preprocessing_config("tiny-base_preprocessing", TOKENIZERS / "tiny-base"),
        pre_sources,
    )
    (repo / "tiny-base_ensemble" / "1").mkdir(parents=True)
    (repo / "tiny-base_ensemble" / "config.pbtxt").write_text(
        ensemble_config(
            "tiny-base_ensemble", "tiny-base_preprocessing", "tiny-chat_tokens", "tiny-chat_postprocessing"
        )
    )
    _python_model(
        repo,
        "batching_preprocessing",
        preprocessing_config("batching_preprocessing", TOKENIZERS / "tiny-sp", max_queue_delay_us=300_000),
        pre_sources,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    http: str
    grpc: str
    log_path: Path

    def events(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line]

    def wait_for_event(self, predicate) -> dict:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no matching fixture event; got {self.events()[-5:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("python_models")
    repo, log_path = workdir / "repo", workdir / "fixture_events.jsonl"
    build_repository(repo, log_path)
    triton = find_tritonserver()
    ports = [_free_port() for _ in range(3)]
    server_log = workdir / "tritonserver.log"
    env = dict(triton.env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with open(server_log, "wb") as log:
        process = subprocess.Popen(
            triton.command(
                repo,
                f"--http-port={ports[0]}",
                f"--grpc-port={ports[1]}",
                f"--metrics-port={ports[2]}",
                "--disable-auto-complete-config",
                "--exit-on-error=true",
                # Python-backend shared memory is named by this prefix; other servers run beside us.
                shm_prefix_option(f"tspymodels{os.getpid()}_{ports[0]}_"),
            ),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        http = f"http://127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"tritonserver exited:\n{server_log.read_text()[-6000:]}")
            try:
                if httpx.get(f"{http}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"tritonserver not ready:\n{server_log.read_text()[-6000:]}")
            time.sleep(0.5)
        yield Server(http=http, grpc=f"127.0.0.1:{ports[1]}", log_path=log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


_TOKENIZERS: dict[str, object] = {}


def tokenizer(name: str):
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = AutoTokenizer.from_pretrained(str(TOKENIZERS / name), local_files_only=True)
    return _TOKENIZERS[name]


def expected_reply(name: str) -> str:
    tok = tokenizer(name)
    ids = tok.encode(REPLY, add_special_tokens=False) + [tok.eos_token_id]
    return tok.decode(ids, skip_special_tokens=True)


def generate(server: Server, model: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.http}/v2/models/{model}/generate", json=body, timeout=HTTP_TIMEOUT_S)


def generate_stream(server: Server, model: str, body: dict) -> list[dict]:
    """The SSE events of /generate_stream, parsed."""
    events = []
    with httpx.stream(
        "POST", f"{server.http}/v2/models/{model}/generate_stream", json=body, timeout=HTTP_TIMEOUT_S
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[len("data:") :]))
    return events


def streamed_text(events: list[dict]) -> str:
    errors = [e for e in events if "error" in e]
    assert not errors, errors
    return "".join(e.get("text_output", "") for e in events)


# -- ensemble ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-chat", "tiny-sp"])
def test_ensemble_non_streaming_text_in_text_out(server: Server, name: str) -> None:
    response = generate(
        server, f"{name}_ensemble", {"text_input": "Tell me about serving.", "max_tokens": 200}
    )
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected_reply(name)


@pytest.mark.parametrize("name", ["tiny-chat", "tiny-sp"])
def test_ensemble_streaming_keeps_spaces_and_characters(server: Server, name: str) -> None:
    body = {"id": f"ens-stream-{name}", "text_input": "Stream it.", "max_tokens": 200, "stream": True}
    events = generate_stream(server, f"{name}_ensemble", body)
    reply_tokens = len(tokenizer(name).encode(REPLY, add_special_tokens=False)) + 1
    assert len(events) == reply_tokens  # one response per token: it really streamed
    pieces = [e["text_output"] for e in events]
    assert "".join(pieces) == expected_reply(name)
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize("ensemble", ["tiny-sp_ensemble", "tiny-sp_ensemble_by_id"])
def test_ensemble_concurrent_streams_do_not_mix(server: Server, ensemble: str) -> None:
    """Keyed by the engine's arrival time (and the id), or by the request id alone."""

    def one(index: int) -> str:
        body = {
            "id": f"{ensemble}-{index}",
            "text_input": f"Prompt {index}",
            "max_tokens": 200,
            "stream": True,
        }
        return streamed_text(generate_stream(server, ensemble, body))

    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(one, range(4)))
    assert texts == [expected_reply("tiny-sp")] * 4


def test_ensemble_stream_without_request_id_decodes_each_chunk_alone(server: Server) -> None:
    """Without a request id nothing ties a stream's chunks together in the ensemble (the engine's
    arrival time comes only with perf metrics, which are the client's choice), so each chunk is
    decoded on its own, as upstream's postprocessing does; the router always sends an id."""
    events = generate_stream(server, "tiny-chat_ensemble", {"text_input": "No id.", "max_tokens": 200, "stream": True})
    chunks = [e["text_output"] for e in events if "text_output" in e]
    assert len(chunks) > 1
    assert "".join(chunks).replace("\ufffd", "") != ""
    assert not any("arrival_time_ns" in e for e in events)  # perf metrics were not asked for


def test_ensemble_non_streaming_with_request_id_equals_whole_decode(server: Server) -> None:
    for name in ["tiny-chat", "tiny-sp"]:
        for ensemble in [f"{name}_ensemble", f"{name}_ensemble_by_id"]:
            response = generate(
                server, ensemble, {"id": f"whole-{ensemble}", "text_input": "x", "max_tokens": 200}
            )
            assert response.status_code == 200, response.text
            assert response.json()["text_output"] == expected_reply(name)


def test_ensemble_chat_messages_use_the_chat_template(server: Server) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi, who are you?"}]
    body = {"id": "chat-ensemble", "text_input": "", "messages": json.dumps(messages), "max_tokens": 200}
    response = generate(server, "tiny-chat_ensemble", body)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected_reply("tiny-chat")
    received = server.wait_for_event(lambda e: e["event"] == "request" and e["id"] == "chat-ensemble")
    tok = tokenizer("tiny-chat")
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert received["input_ids"] == [tok.encode(prompt, add_special_tokens=False)]


def test_chat_without_chat_template_is_a_clear_error(server: Server) -> None:
    before = len(server.events())
    body = {"text_input": "", "messages": json.dumps([{"role": "user", "content": "Hi"}]), "max_tokens": 8}
    response = generate(server, "tiny-base_ensemble", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "has no chat template" in error and str(TOKENIZERS / "tiny-base") in error
    assert len(server.events()) == before  # nothing reached the engine fixture


def test_prompt_longer_than_max_input_len_never_reaches_the_engine(server: Server) -> None:
    before = len(server.events())
    response = generate(server, "tiny-chat_ensemble", {"text_input": "tokens " * 200, "max_tokens": 8})
    assert response.status_code == 400
    assert f"max_input_len of {MAX_INPUT_LEN}" in response.json()["error"]
    assert len(server.events()) == before


def test_request_parameters_and_sampling_inputs_reach_the_engine(server: Server) -> None:
    body = {
        "id": "params-ensemble",
        "text_input": "x",
        "max_tokens": 3,
        "top_k": 4,
        "seed": 7,
        "request_type": "context_only",
        "stop_words": ["world"],
    }
    response = generate(server, "tiny-chat_ensemble", body)
    assert response.status_code == 200, response.text
    received = server.wait_for_event(lambda e: e["event"] == "request" and e["id"] == "params-ensemble")
    assert received["parameters"]["request_type"] == "context_only"
    assert {"runtime_top_k", "seed", "stop_words_list"} <= set(received["inputs"])


# -- preprocessing on its own: batches ----------------------------------------------------------


def _preprocess_inputs(queries: list[str], **extra: np.ndarray) -> list[httpclient.InferInput]:
    query = np.array([[q.encode()] for q in queries], dtype=object)
    inputs = [
        httpclient.InferInput("QUERY", list(query.shape), "BYTES"),
        httpclient.InferInput("REQUEST_OUTPUT_LEN", [len(queries), 1], "INT32"),
    ]
    inputs[0].set_data_from_numpy(query)
    inputs[1].set_data_from_numpy(np.full((len(queries), 1), 16, dtype=np.int32))
    for name, array in extra.items():
        tensor = httpclient.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _preprocess(
    client: httpclient.InferenceServerClient, model: str, queries: list[str], **extra: np.ndarray
):
    return client.infer(model, _preprocess_inputs(queries, **extra))


def test_preprocessing_batch_rows_are_padded_with_lengths_and_word_lists(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    queries = ["Hello world", "A much longer prompt about serving models"]
    stop = np.array([[b"world", b"model"], [b"", b"done"]], dtype=object)
    result = _preprocess(client, "tiny-sp_preprocessing", queries, STOP_WORDS_DICT=stop)
    tok = tokenizer("tiny-sp")
    ids, lengths = result.as_numpy("INPUT_ID"), result.as_numpy("REQUEST_INPUT_LEN")
    expected = [tok.encode(q) for q in queries]
    assert lengths.tolist() == [[len(e)] for e in expected]
    for row, exp in enumerate(expected):
        assert ids[row, : len(exp)].tolist() == exp
        assert set(ids[row, len(exp) :].tolist()) <= {tok.eos_token_id}  # no pad token: padded with eos
    assert result.as_numpy("OUT_PAD_ID").tolist() == [[tok.eos_token_id]] * 2
    assert result.as_numpy("OUT_END_ID").tolist() == [[tok.eos_token_id]] * 2
    words = result.as_numpy("STOP_WORDS_IDS")
    world, model = (
        tok.encode("world", add_special_tokens=False),
        tok.encode("model", add_special_tokens=False),
    )
    assert words.shape[:2] == (2, 2)
    assert words[0, 0, : len(world) + len(model)].tolist() == world + model
    assert words[0, 1, :2].tolist() == [len(world), len(world) + len(model)]
    assert result.as_numpy("BAD_WORDS_IDS").shape == (2, 2, 0)
    assert result.as_numpy("EMBEDDING_BIAS").shape == (2, 0)


def test_preprocessing_embedding_bias_covers_the_vocabulary(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"))
    words = np.array([[b"world"]], dtype=object)
    result = _preprocess(
        client,
        "tiny-chat_preprocessing",
        ["Hi"],
        EMBEDDING_BIAS_WORDS=words,
        EMBEDDING_BIAS_WEIGHTS=np.array([[2.5]], dtype=np.float32),
    )
    tok = tokenizer("tiny-chat")
    bias = result.as_numpy("EMBEDDING_BIAS")
    assert bias.shape == (1, len(tok))
    assert {int(i) for i in np.nonzero(bias[0])[0]} == set(tok.encode("world", add_special_tokens=False))


def test_preprocessing_serves_several_requests_per_execute(server: Server) -> None:
    """Eight concurrent single requests; the dynamic batcher (300 ms window) hands them over together."""
    client = httpclient.InferenceServerClient(server.http.removeprefix("http://"), concurrency=8)
    queries = [f"request number {i} " + "word " * i for i in range(8)]
    pending = [client.async_infer("batching_preprocessing", _preprocess_inputs([q])) for q in queries]
    results = [request.get_result() for request in pending]
    tok = tokenizer("tiny-sp")
    for query, result in zip(queries, results):
        assert result.as_numpy("INPUT_ID")[0].tolist() == tok.encode(query)
    stats = client.get_inference_statistics("batching_preprocessing")["model_stats"][0]
    assert stats["inference_count"] == 8
    assert stats["execution_count"] < stats["inference_count"]


# -- BLS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-chat", "tiny-sp"])
def test_bls_non_streaming_text_in_text_out(server: Server, name: str) -> None:
    body = {"text_input": "Tell me.", "max_tokens": 200, "return_num_output_tokens": True}
    response = generate(server, f"{name}_bls", body)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected_reply(name)
    assert (
        response.json()["num_output_tokens"]
        == len(tokenizer(name).encode(REPLY, add_special_tokens=False)) + 1
    )


def test_bls_streaming_sends_exact_deltas(server: Server) -> None:
    body = {
        "id": "bls-stream",
        "text_input": "Stream it.",
        "max_tokens": 200,
        "stream": True,
        "return_num_output_tokens": True,
    }
    events = generate_stream(server, "tiny-chat_bls", body)
    pieces = [e["text_output"] for e in events]
    assert "".join(pieces) == expected_reply("tiny-chat")
    assert not any("\ufffd" in piece for piece in pieces)
    reply_tokens = len(tokenizer("tiny-chat").encode(REPLY, add_special_tokens=False)) + 1
    # One response per engine step, then the final one: the counts ride on it alone.
    assert len(events) == reply_tokens + 1 and events[-1]["text_output"] == ""
    assert events[-1]["num_output_tokens"] == reply_tokens
    assert not any("num_output_tokens" in e for e in events[:-1])


def test_non_decoupled_bls_answers_once_and_refuses_to_stream(server: Server) -> None:
    response = generate(server, "tiny-chat_bls_sync", {"text_input": "Tell me.", "max_tokens": 200})
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected_reply("tiny-chat")
    refused = generate(server, "tiny-chat_bls_sync", {"text_input": "x", "max_tokens": 8, "stream": True})
    assert refused.status_code == 400
    assert "is not decoupled, so it cannot stream" in refused.json()["error"]


def test_bls_streaming_with_accumulate_tokens_sends_the_text_so_far(server: Server) -> None:
    """tiny-sp_bls is configured with accumulate_tokens=true."""
    body = {"text_input": "Stream it.", "max_tokens": 200, "stream": True}
    texts = [e["text_output"] for e in generate_stream(server, "tiny-sp_bls", body)]
    assert texts[-1] == expected_reply("tiny-sp")
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))


def test_bls_chat_and_request_parameters(server: Server) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    body = {
        "id": "bls-chat",
        "text_input": "",
        "messages": json.dumps(messages),
        "max_tokens": 200,
        "request_type": "generation_only",
        "temperature": 0.5,
    }
    response = generate(server, "tiny-chat_bls", body)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected_reply("tiny-chat")
    received = server.wait_for_event(lambda e: e["event"] == "request" and e["id"] == "bls-chat")
    tok = tokenizer("tiny-chat")
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert received["input_ids"] == [tok.encode(prompt, add_special_tokens=False)]
    assert received["parameters"]["request_type"] == "generation_only"
    assert "temperature" in received["inputs"]


def test_bls_turns_preprocessing_errors_into_error_responses(server: Server) -> None:
    response = generate(
        server, "tiny-chat_bls", {"text_input": "tokens " * 200, "max_tokens": 8, "stream": False}
    )
    assert response.status_code == 400
    assert f"max_input_len of {MAX_INPUT_LEN}" in response.json()["error"]
    with httpx.stream(
        "POST",
        f"{server.http}/v2/models/tiny-chat_bls/generate_stream",
        timeout=HTTP_TIMEOUT_S,
        json={"text_input": "", "messages": "not json", "max_tokens": 8, "stream": True},
    ) as stream:
        body = stream.read().decode()
    assert "MESSAGES is not valid JSON" in body


def test_bls_cancelled_stream_stops_the_engine(server: Server) -> None:
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        inputs = []
        for name, array, dtype in [
            ("text_input", np.array([[b"go on forever"]], dtype=object), "BYTES"),
            ("max_tokens", np.array([[1000]], dtype=np.int32), "INT32"),
            ("stream", np.array([[True]]), "BOOL"),
        ]:
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        client.async_stream_infer(
            "tiny-chat_bls",
            inputs,
            request_id="bls-cancel",
            parameters={"fixture_repeat": True, "fixture_delay_s": 0.05},
        )
        for _ in range(3):
            _, error = received.get(timeout=EVENT_TIMEOUT_S)
            assert error is None, error.message()
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    stopped = server.wait_for_event(
        lambda e: e["event"] in ("stopped", "cancelled") and e["id"] == "bls-cancel"
    )
    assert stopped.get("after", 0) < 1000
