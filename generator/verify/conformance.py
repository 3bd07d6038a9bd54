"""Requests shaped like NVIDIA's own clients, sent to one Triton replica; each returns a result.

The shapes follow the TensorRT-LLM backend's client scripts (``triton_backend/inflight_batcher_llm/
client/end_to_end_grpc_client.py``, ``inflight_batcher_llm_client.py``, ``triton_backend/tools/
inflight_batcher_llm/end_to_end_test.py``, ``benchmark_core_model.py``) and the HTTP ``generate`` /
``generate_stream`` examples of the backend's README; what they expect back is what is checked:

* text models (``<m>_ensemble``, ``<m>_bls``, and the decode pool's ``<m>_decode``): ``text_input``,
  ``max_tokens``, ``stream`` (always sent, also when not streaming), ``beam_width``, ``temperature``
  and ``exclude_input_in_output`` as ``[1, 1]`` tensors; ``text_output`` comes back as a flat BYTES
  array, so ``result.as_numpy("text_output")[0].decode()`` gives the text. Log probs and the
  per-request perf metrics are outputs the client names when it asks for them.
* the engine (``<m>_tensorrt_llm``, ``<m>_generation``): token ids in (``input_ids``,
  ``input_lengths``, ``request_output_len``, ``end_id``, ``pad_id``, ``streaming``, …) over gRPC
  ``stream_infer``; ``output_ids`` is the first output and ``[1, beams, tokens]``
  (``benchmark_core_model.py`` reads ``outputs[0]``); perf metrics and ``batch_index`` only when
  asked for / for batches above one; a second request with ``stop=true`` and the same request id
  ends the first one normally, and is answered with an empty success response.
* cancelling a gRPC stream (``stop_stream(cancel_requests=True)``) ends a request early and leaves
  the server answering.

Every function takes the replica's addresses and a model name, and returns a :class:`CheckResult`
naming what differed; none raises for what the server answers.
"""

from __future__ import annotations

import queue
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from generator.contract import load_contract
from generator.verify.report import CheckResult, failed, passed

__all__ = [
    "PERF_METRIC_OUTPUTS",
    "ConformanceSettings",
    "Replica",
    "engine_cancel",
    "engine_checks",
    "engine_grpc",
    "engine_log_probs",
    "engine_perf_metrics",
    "engine_stop_request",
    "entry_cancel",
    "entry_checks",
    "entry_generate",
    "entry_grpc",
    "entry_log_probs",
    "entry_perf_metrics",
    "entry_stop_words",
    "pipeline_by_hand",
    "prefill_context_only",
]

# The outputs the engine attaches only when a request sets return_perf_metrics / return_log_probs,
# from the backend contract (the same in both eras); end_to_end_grpc_client.py asks for exactly these
# and reads each as result.as_numpy(name)[0][0].
_FLAGGED = load_contract("1.x").model("tensorrt_llm").flagged_outputs
PERF_METRIC_OUTPUTS: tuple[str, ...] = _FLAGGED["return_perf_metrics"]
LOG_PROB_OUTPUTS: tuple[str, ...] = _FLAGGED["return_log_probs"]


@dataclass(frozen=True)
class ConformanceSettings:
    prompt: str = "Tell me how Triton serves a model."
    max_tokens: int = 12
    # Stop and cancel checks need a request still running when the stop arrives.
    long_max_tokens: int = 400
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Replica:
    """Where one tritonserver answers."""

    http_url: str  # http://host:port
    grpc_address: str  # host:port


# --- a gRPC stream, collected ----------------------------------------------------------------------


@dataclass
class _Stream:
    results: list[grpcclient.InferResult] = field(default_factory=list)
    errors: list[InferenceServerException] = field(default_factory=list)
    finals: int = 0
    timed_out: bool = False
    cancelled_after_s: float | None = None

    @property
    def carrying(self) -> list[grpcclient.InferResult]:
        """Responses with at least one output (the empty final response carries none)."""
        return [r for r in self.results if r.get_response().outputs]

    def first_error(self) -> str:
        return _error_text(self.errors[0]) if self.errors else ""


# After the i-th response arrives: return "cancel" to cancel the stream, or send more on the client.
_After = Callable[[grpcclient.InferenceServerClient, int], str | None]


def _run_stream(
    replica: Replica,
    model: str,
    inputs: dict[str, np.ndarray],
    settings: ConformanceSettings,
    *,
    outputs: tuple[str, ...] = (),
    finals: int = 1,
    after: _After | None = None,
    request_id: str | None = None,
) -> _Stream:
    """Send one request on a fresh gRPC stream and collect until ``finals`` final responses, an
    error, a cancellation or the timeout."""
    stream = _Stream()
    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(replica.grpc_address)
    try:
        client.start_stream(callback=lambda result, error: events.put((result, error)))
        client.async_stream_infer(
            model,
            [_grpc_tensor(name, value) for name, value in inputs.items()],
            outputs=[grpcclient.InferRequestedOutput(o) for o in outputs] or None,
            request_id=request_id or _request_id(),
            enable_empty_final_response=True,
        )
        deadline = time.monotonic() + settings.timeout_s
        while stream.finals < finals:
            try:
                result, error = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                stream.timed_out = True
                break
            if error is not None:
                stream.errors.append(error)
                break
            stream.results.append(result)
            if _is_final(result):
                stream.finals += 1
            if after is not None and after(client, len(stream.results)) == "cancel":
                started = time.monotonic()
                client.stop_stream(cancel_requests=True)
                stream.cancelled_after_s = time.monotonic() - started
                break
    finally:
        client.stop_stream()
        client.close()
    return stream


def _is_final(result: grpcclient.InferResult) -> bool:
    parameter = result.get_response().parameters.get("triton_final_response")
    return bool(parameter is not None and parameter.bool_param)


def _grpc_tensor(name: str, value: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    tensor.set_data_from_numpy(value)
    return tensor


def _request_id() -> str:
    return f"tritonstack-verify-{uuid.uuid4().hex[:12]}"


def _error_text(error: BaseException) -> str:
    text = error.message() if isinstance(error, InferenceServerException) else str(error)
    return " ".join(str(text).split())[:300]


def _connect_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_error_text(exc)}"


# --- text models: ensemble, BLS, decode entry --------------------------------------------------------


def _one(value: Any, dtype: Any) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def _entry_inputs(
    settings: ConformanceSettings,
    *,
    streaming: bool,
    max_tokens: int | None = None,
    greedy: bool = False,
    exclude_input: bool = False,
    **extra: np.ndarray,
) -> dict[str, np.ndarray]:
    """What end_to_end_grpc_client.py's prepare_inputs sends by default (plus top_k=1 when a check
    compares two answers, which needs the same tokens twice)."""
    inputs = {
        "text_input": _one(settings.prompt, object),
        "max_tokens": _one(max_tokens or settings.max_tokens, np.int32),
        "stream": _one(streaming, bool),
        "beam_width": _one(1, np.int32),
        "temperature": _one(1.0, np.float32),
        "exclude_input_in_output": _one(exclude_input, bool),
    }
    if greedy:
        inputs["top_k"] = _one(1, np.int32)
    return {**inputs, **extra}


def _text(result: grpcclient.InferResult, name: str = "text_output") -> str:
    """The client's own reading: ``as_numpy(name)[0].decode()``; raises ValueError with why not."""
    array = result.as_numpy(name)
    if array is None:
        raise ValueError(f"no {name} in the response")
    if array.ndim != 1:
        raise ValueError(
            f"{name} has shape {list(array.shape)}; NVIDIA's clients read {name}[0].decode() and need a "
            f"flat [n] BYTES array"
        )
    return bytes(array[0]).decode("utf-8")


def _texts(stream: _Stream) -> list[str]:
    return [_text(r) for r in stream.carrying]


def _joined_text(stream: _Stream) -> str:
    """All text of a stream whatever the shape of text_output (checks other than the shape's own)."""
    return b"".join(bytes(b) for r in stream.carrying for b in r.as_numpy("text_output").flatten()).decode(
        "utf-8"
    )


def entry_grpc(
    replica: Replica, model: str, settings: ConformanceSettings, *, streaming: bool
) -> CheckResult:
    """stream_infer with the default inputs of end_to_end_grpc_client.py, asking for text_output."""
    check = "grpc-stream" if streaming else "grpc"
    try:
        stream = _run_stream(
            replica, model, _entry_inputs(settings, streaming=streaming), settings, outputs=("text_output",)
        )
    except InferenceServerException as exc:
        return failed(check, model, _connect_error(exc))
    problem = _stream_problem(stream)
    if problem:
        return failed(check, model, problem)
    try:
        texts = _texts(stream)
    except ValueError as exc:
        return failed(check, model, str(exc))
    if not "".join(texts).strip():
        return failed(check, model, "empty text_output")
    if streaming and len(texts) < 2:
        return failed(
            check, model, f"stream=true gave {len(texts)} response(s) with text; expected one per token"
        )
    if not streaming and len(texts) != 1:
        return failed(check, model, f"stream=false gave {len(texts)} responses with text; expected one")
    return passed(check, model, f"{len(texts)} response(s)")


def stream_refused(replica: Replica, model: str, settings: ConformanceSettings, *, engine: str | None = None) -> CheckResult:
    """A model that does not stream (not decoupled) refuses ``stream=true`` with an error, as the real
    backend does ("Streaming is only supported if model is deployed using decoupled mode.",
    utils.cc createRequestsFromInputTensors); it must not hang or answer as if it streamed."""
    check = "stream-refused"
    target = engine or model
    try:
        if engine is None:
            stream = _run_stream(replica, model, _entry_inputs(settings, streaming=True), settings, outputs=("text_output",))
        else:
            outcome = _engine_stream(check, replica, (model, engine), settings, streaming=True)
            if isinstance(outcome, CheckResult):  # the prompt could not be prepared
                return outcome
            stream = outcome
    except InferenceServerException as exc:
        return passed(check, target, f"refused: {exc}")
    if stream.timed_out:
        return failed(check, target, "no answer before the timeout")
    if not stream.errors:
        return failed(check, target, "stream=true was served by a model that is not decoupled")
    return passed(check, target, f"refused: {stream.first_error()}")


def _stream_problem(stream: _Stream) -> str:
    if stream.errors:
        return f"error from server: {stream.first_error()}"
    if stream.timed_out:
        return "no final response before the timeout"
    return ""


def entry_generate(
    replica: Replica, model: str, settings: ConformanceSettings, *, streaming: bool
) -> CheckResult:
    """The README's ``generate`` / ``generate_stream`` bodies (bad_words and stop_words as "")."""
    check = "http-generate-stream" if streaming else "http-generate"
    body: dict[str, Any] = {
        "text_input": settings.prompt,
        "max_tokens": settings.max_tokens,
        "bad_words": "",
        "stop_words": "",
    }
    if streaming:
        body["stream"] = True
    endpoint = "generate_stream" if streaming else "generate"
    url = f"{replica.http_url}/v2/models/{model}/{endpoint}"
    try:
        if not streaming:
            response = httpx.post(url, json=body, timeout=settings.timeout_s)
            if response.status_code != 200:
                return failed(check, model, f"HTTP {response.status_code}: {response.text[:300]}")
            events = [response.json()]
        else:
            events = []
            with httpx.stream("POST", url, json=body, timeout=settings.timeout_s) as response:
                if response.status_code != 200:
                    response.read()
                    return failed(check, model, f"HTTP {response.status_code}: {response.text[:300]}")
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(orjson.loads(line.removeprefix("data: ")))
    except httpx.HTTPError as exc:
        return failed(check, model, _connect_error(exc))
    errors = [e["error"] for e in events if "error" in e]
    if errors:
        return failed(check, model, f"error event: {errors[0]}")
    texts = [e.get("text_output") for e in events if "text_output" in e]
    if not texts or not all(isinstance(t, str) for t in texts):
        return failed(check, model, f"text_output should be a string in every event, got {texts[:3]!r}")
    if not "".join(texts).strip():
        return failed(check, model, "empty text_output")
    if streaming and len(texts) < 2:
        return failed(check, model, f"generate_stream sent {len(texts)} event(s); expected one per token")
    return passed(check, model, f"{len(texts)} event(s)")


def entry_log_probs(replica: Replica, model: str, settings: ConformanceSettings) -> CheckResult:
    """return_log_probs=true, asking for text_output, cum_log_probs and output_log_probs."""
    check = "log-probs"
    inputs = _entry_inputs(settings, streaming=False, return_log_probs=_one(True, bool))
    return _entry_with_outputs(check, replica, model, settings, inputs, LOG_PROB_OUTPUTS, index_depth=1)


def entry_perf_metrics(replica: Replica, model: str, settings: ConformanceSettings) -> CheckResult:
    """return_perf_metrics=true, asking for the perf outputs end_to_end_grpc_client.py reads."""
    check = "perf-metrics"
    inputs = _entry_inputs(settings, streaming=False, return_perf_metrics=_one(True, bool))
    return _entry_with_outputs(check, replica, model, settings, inputs, PERF_METRIC_OUTPUTS, index_depth=2)


def _entry_with_outputs(
    check: str,
    replica: Replica,
    model: str,
    settings: ConformanceSettings,
    inputs: dict[str, np.ndarray],
    wanted: tuple[str, ...],
    *,
    index_depth: int,
) -> CheckResult:
    try:
        stream = _run_stream(replica, model, inputs, settings, outputs=("text_output", *wanted))
    except InferenceServerException as exc:
        return failed(check, model, _connect_error(exc))
    problem = _stream_problem(stream)
    if problem:
        return failed(check, model, problem)
    carrying = stream.carrying
    if not carrying:
        return failed(check, model, "no response with outputs")
    result = carrying[-1]
    missing = [name for name in wanted if result.as_numpy(name) is None]
    if missing:
        return failed(check, model, f"outputs missing: {', '.join(missing)}")
    # The client indexes [0] (log probs) or [0][0] (perf metrics) into each.
    shallow = [name for name in wanted if result.as_numpy(name).ndim < index_depth]
    if shallow:
        return failed(check, model, f"outputs with fewer than {index_depth} dims: {', '.join(shallow)}")
    return passed(check, model, ", ".join(wanted))


def entry_stop_words(replica: Replica, model: str, settings: ConformanceSettings) -> CheckResult:
    """A word of a greedy answer as ``stop_words``: the same request ends at that word."""
    check = "stop-words"
    try:
        full = _entry_text(replica, model, settings, stop_words=None)
        word = _stop_word(full)
        if word is None:
            return failed(check, model, f"the answer has no word to stop at: {full!r}")
        stopped = _entry_text(replica, model, settings, stop_words=word)
    except (InferenceServerException, ValueError) as exc:
        return failed(check, model, _error_text(exc))
    if not (len(stopped) < len(full) and full.startswith(stopped.rstrip())):
        return failed(check, model, f"stop_words [{word!r}] did not end {full!r}; got {stopped!r}")
    return passed(check, model, f"stopped at {word!r}")


def _entry_text(
    replica: Replica, model: str, settings: ConformanceSettings, *, stop_words: str | None
) -> str:
    extra = {} if stop_words is None else {"stop_words": np.array([[stop_words]], dtype=object)}
    inputs = _entry_inputs(settings, streaming=False, greedy=True, exclude_input=True, max_tokens=48, **extra)
    stream = _run_stream(replica, model, inputs, settings, outputs=("text_output",))
    problem = _stream_problem(stream)
    if problem:
        raise ValueError(problem)
    return _joined_text(stream)


def _stop_word(text: str) -> str | None:
    """A word from the middle of ``text`` with its leading space, as the tokenizer saw it there."""
    words = [m.group(0) for m in re.finditer(r" [A-Za-z]{3,}", text)]
    middle = words[len(words) // 2 :]
    # Only a word's first appearance ends the answer where this check expects.
    return next((w for w in middle if text.index(w) > 0 and text.count(w) == 1), None)


def entry_cancel(replica: Replica, model: str, settings: ConformanceSettings) -> CheckResult:
    """Cancel a streaming request after two responses; the server then answers a new request."""
    inputs = _entry_inputs(settings, streaming=True, max_tokens=settings.long_max_tokens)
    return _cancel("cancel", replica, model, settings, inputs, _entry_inputs(settings, streaming=False))


def _cancel(
    check: str,
    replica: Replica,
    model: str,
    settings: ConformanceSettings,
    inputs: dict[str, np.ndarray],
    follow_up: dict[str, np.ndarray],
) -> CheckResult:
    try:
        stream = _run_stream(
            replica, model, inputs, settings, after=lambda _client, count: "cancel" if count >= 2 else None
        )
    except InferenceServerException as exc:
        return failed(check, model, _connect_error(exc))
    if stream.errors and "cancel" not in stream.first_error().lower():
        return failed(check, model, f"error from server before the cancellation: {stream.first_error()}")
    if stream.cancelled_after_s is None:
        return failed(check, model, "the request ended before it could be cancelled; raise long_max_tokens")
    if stream.cancelled_after_s > settings.timeout_s / 2:
        return failed(check, model, f"cancelling took {stream.cancelled_after_s:.1f}s")
    try:
        after = _run_stream(replica, model, follow_up, settings)
    except InferenceServerException as exc:
        return failed(check, model, f"after a cancellation the next request failed: {_connect_error(exc)}")
    problem = _stream_problem(after) or ("" if after.carrying else "no response with outputs")
    if problem:
        return failed(check, model, f"after a cancellation the next request failed: {problem}")
    return passed(
        check, model, f"cancelled in {stream.cancelled_after_s * 1000:.0f} ms; next request answered"
    )


# --- the engine: token ids in, token ids out ---------------------------------------------------------


@dataclass(frozen=True)
class _Tokens:
    input_ids: np.ndarray  # [1, n] INT32
    input_lengths: np.ndarray  # [1, 1]
    end_id: np.ndarray
    pad_id: np.ndarray


def _tokenize(replica: Replica, preprocessing: str, settings: ConformanceSettings) -> _Tokens:
    """end_to_end_test.py's first step: the preprocessing model, over HTTP infer."""
    client = httpclient.InferenceServerClient(
        replica.http_url.removeprefix("http://"), network_timeout=settings.timeout_s
    )
    try:
        inputs = {
            "QUERY": _one(settings.prompt, object),
            "BAD_WORDS_DICT": _one("", object),
            "STOP_WORDS_DICT": _one("", object),
            "REQUEST_OUTPUT_LEN": _one(settings.max_tokens, np.int32),
        }
        result = client.infer(preprocessing, [_http_tensor(n, v) for n, v in inputs.items()])
    finally:
        client.close()
    return _Tokens(
        input_ids=result.as_numpy("INPUT_ID").astype(np.int32),
        input_lengths=result.as_numpy("REQUEST_INPUT_LEN").astype(np.int32),
        end_id=result.as_numpy("OUT_END_ID").astype(np.int32),
        pad_id=result.as_numpy("OUT_PAD_ID").astype(np.int32),
    )


def _http_tensor(name: str, value: np.ndarray) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    tensor.set_data_from_numpy(value)
    return tensor


def _engine_inputs(
    tokens: _Tokens, *, streaming: bool, output_len: int, greedy: bool = True, **extra: np.ndarray
) -> dict[str, np.ndarray]:
    """What inflight_batcher_llm_client.py's prepare_inputs always sends."""
    return {
        "input_ids": tokens.input_ids,
        "input_lengths": tokens.input_lengths,
        "request_output_len": _one(output_len, np.int32),
        "beam_width": _one(1, np.int32),
        "temperature": _one(1.0, np.float32),
        "streaming": _one(streaming, bool),
        "end_id": tokens.end_id,
        "pad_id": tokens.pad_id,
        "runtime_top_k": _one(1 if greedy else 0, np.int32),
        "runtime_top_p": _one(0.0, np.float32),
        **extra,
    }


def _engine_stream(
    check: str,
    replica: Replica,
    names: tuple[str, str],
    settings: ConformanceSettings,
    *,
    streaming: bool,
    output_len: int | None = None,
    finals: int = 1,
    after: _After | None = None,
    request_id: str | None = None,
    **extra: np.ndarray,
) -> _Stream | CheckResult:
    """Tokenize with the pool's preprocessing model, then send token ids to the engine."""
    preprocessing, engine = names
    try:
        tokens = _tokenize(replica, preprocessing, settings)
    except (InferenceServerException, OSError, KeyError, AttributeError) as exc:
        return failed(
            check, engine, f"could not tokenize the prompt with {preprocessing}: {_error_text(exc)}"
        )
    inputs = _engine_inputs(
        tokens, streaming=streaming, output_len=output_len or settings.max_tokens, **extra
    )
    try:
        return _run_stream(
            replica, engine, inputs, settings, finals=finals, after=after, request_id=request_id
        )
    except InferenceServerException as exc:
        return failed(check, engine, _connect_error(exc))


def engine_grpc(
    replica: Replica, names: tuple[str, str], settings: ConformanceSettings, *, streaming: bool
) -> CheckResult:
    """Token ids in, as inflight_batcher_llm_client.py sends them; output_ids first, shaped
    [1, beams, tokens]; perf metrics and batch_index not sent unasked."""
    check = "engine-grpc-stream" if streaming else "engine-grpc"
    engine = names[1]
    stream = _engine_stream(check, replica, names, settings, streaming=streaming)
    if isinstance(stream, CheckResult):
        return stream
    problem = _stream_problem(stream)
    if problem:
        return failed(check, engine, problem)
    carrying = stream.carrying
    if not carrying:
        return failed(check, engine, "no response with output_ids")
    for result in carrying:
        outputs = [o.name for o in result.get_response().outputs]
        if outputs[0] != "output_ids":
            return failed(
                check,
                engine,
                f"first output is {outputs[0]!r}; benchmark_core_model.py reads outputs[0] as output_ids",
            )
        ids = result.as_numpy("output_ids")
        if ids.ndim != 3 or ids.shape[0] != 1:
            return failed(
                check, engine, f"output_ids has shape {list(ids.shape)}; expected [1, beams, tokens]"
            )
        unasked = [o for o in outputs if o in PERF_METRIC_OUTPUTS or o == "batch_index"]
        if unasked:
            return failed(check, engine, f"outputs sent without being asked for: {', '.join(unasked)}")
    tokens = sum(int(r.as_numpy("output_ids").shape[-1]) for r in carrying)
    if streaming and len(carrying) < 2:
        return failed(
            check, engine, f"streaming=true gave {len(carrying)} response(s); expected one per token"
        )
    if not streaming and len(carrying) != 1:
        return failed(check, engine, f"streaming=false gave {len(carrying)} responses; expected one")
    return passed(check, engine, f"{len(carrying)} response(s), {tokens} token(s)")


def engine_perf_metrics(
    replica: Replica, names: tuple[str, str], settings: ConformanceSettings
) -> CheckResult:
    return _engine_outputs(
        "engine-perf-metrics", replica, names, settings, PERF_METRIC_OUTPUTS, "return_perf_metrics"
    )


def engine_log_probs(replica: Replica, names: tuple[str, str], settings: ConformanceSettings) -> CheckResult:
    return _engine_outputs("engine-log-probs", replica, names, settings, LOG_PROB_OUTPUTS, "return_log_probs")


def _engine_outputs(
    check: str,
    replica: Replica,
    names: tuple[str, str],
    settings: ConformanceSettings,
    wanted: tuple[str, ...],
    flag: str,
) -> CheckResult:
    engine = names[1]
    stream = _engine_stream(check, replica, names, settings, streaming=False, **{flag: _one(True, bool)})
    if isinstance(stream, CheckResult):
        return stream
    problem = _stream_problem(stream)
    if problem:
        return failed(check, engine, problem)
    if not stream.carrying:
        return failed(check, engine, "no response with outputs")
    result = stream.carrying[-1]
    missing = [name for name in wanted if result.as_numpy(name) is None]
    if missing:
        return failed(check, engine, f"{flag}=true but outputs missing: {', '.join(missing)}")
    return passed(check, engine, ", ".join(wanted))


def engine_stop_request(
    replica: Replica, names: tuple[str, str], settings: ConformanceSettings, *, attempts: int = 3
) -> CheckResult:
    """inflight_batcher_llm_client.py --stop-after-ms: a second request on the same stream with the
    same request id and ``stop=true``. The real backend answers it with an empty success response and
    ends the first request normally, before all its tokens.

    A fast engine may finish all tokens before the stop arrives; that outcome (and only that one) is
    tried again, up to ``attempts`` times, so an ignored stop still fails every time."""
    result = _engine_stop_once(replica, names, settings)
    for _ in range(attempts - 1):
        if result.passed or "were generated" not in result.detail:
            break
        result = _engine_stop_once(replica, names, settings)
    return result


def _engine_stop_once(replica: Replica, names: tuple[str, str], settings: ConformanceSettings) -> CheckResult:
    check = "engine-stop-request"
    engine = names[1]
    request_id = _request_id()
    stop_inputs = {
        "input_ids": np.zeros([1, 1], dtype=np.int32),
        "input_lengths": np.zeros([1, 1], dtype=np.int32),
        "request_output_len": _one(0, np.int32),
        "stop": _one(True, bool),
    }

    def send_stop(client: grpcclient.InferenceServerClient, count: int) -> None:
        if count == 1:
            client.async_stream_infer(
                engine,
                [_grpc_tensor(n, v) for n, v in stop_inputs.items()],
                request_id=request_id,
                enable_empty_final_response=True,
            )

    stream = _engine_stream(
        check,
        replica,
        names,
        settings,
        streaming=True,
        output_len=settings.long_max_tokens,
        finals=2,
        after=send_stop,
        request_id=request_id,
    )
    if isinstance(stream, CheckResult):
        return stream
    if stream.errors:
        return failed(
            check,
            engine,
            f"the stopped request ended with an error instead of normally: {stream.first_error()}",
        )
    if stream.timed_out:
        return failed(
            check,
            engine,
            f"{stream.finals} of 2 final responses (request and stop request) before the timeout",
        )
    tokens = sum(
        int(r.as_numpy("output_ids").shape[-1])
        for r in stream.carrying
        if r.as_numpy("output_ids") is not None
    )
    if tokens >= settings.long_max_tokens:
        return failed(check, engine, f"all {tokens} tokens were generated; the stop request did not stop it")
    return passed(check, engine, f"stopped after {tokens} token(s)")


def engine_cancel(replica: Replica, names: tuple[str, str], settings: ConformanceSettings) -> CheckResult:
    """inflight_batcher_llm_client.py --stop-via-request-cancel: cancel the gRPC stream."""
    preprocessing, engine = names
    try:
        tokens = _tokenize(replica, preprocessing, settings)
    except (InferenceServerException, OSError, KeyError, AttributeError) as exc:
        return failed(
            "engine-cancel", engine, f"could not tokenize the prompt with {preprocessing}: {_error_text(exc)}"
        )
    inputs = _engine_inputs(tokens, streaming=True, output_len=settings.long_max_tokens)
    follow_up = _engine_inputs(tokens, streaming=False, output_len=settings.max_tokens)
    return _cancel("engine-cancel", replica, engine, settings, inputs, follow_up)


def pipeline_by_hand(
    replica: Replica,
    models: tuple[str, str, str],
    ensemble: str,
    settings: ConformanceSettings,
) -> CheckResult:
    """end_to_end_test.py: preprocessing → engine → postprocessing called one by one gives the
    ensemble's text."""
    check = "pipeline-by-hand"
    preprocessing, engine, postprocessing = models
    stream = _engine_stream(check, replica, (preprocessing, engine), settings, streaming=False)
    if isinstance(stream, CheckResult):
        return stream
    problem = _stream_problem(stream)
    if problem or not stream.carrying:
        return failed(check, engine, problem or "no response with output_ids")
    result = stream.carrying[-1]
    client = httpclient.InferenceServerClient(
        replica.http_url.removeprefix("http://"), network_timeout=settings.timeout_s
    )
    try:
        output = client.infer(
            postprocessing,
            [
                _http_tensor("TOKENS_BATCH", result.as_numpy("output_ids").astype(np.int32)),
                _http_tensor("SEQUENCE_LENGTH", result.as_numpy("sequence_length").astype(np.int32)),
            ],
        ).as_numpy("OUTPUT")
    except InferenceServerException as exc:
        return failed(check, postprocessing, _error_text(exc))
    finally:
        client.close()
    by_hand = b"".join(output.flatten()).decode("utf-8")
    whole = _run_stream(
        replica,
        ensemble,
        {
            "text_input": _one(settings.prompt, object),
            "max_tokens": _one(settings.max_tokens, np.int32),
            "top_k": _one(1, np.int32),
        },
        settings,
        outputs=("text_output",),
    )
    problem = _stream_problem(whole)
    if problem or not whole.carrying:
        return failed(check, ensemble, problem or "no text_output")
    text = _joined_text(whole)
    if text != by_hand:
        return failed(check, ensemble, f"by hand {by_hand!r} != ensemble {text!r}")
    return passed(check, ensemble, f"{preprocessing} → {engine} → {postprocessing}")


# --- the prefill pool's entry (tritonstack's own shape: what the router sends) -----------------------


def prefill_context_only(replica: Replica, model: str, settings: ConformanceSettings) -> CheckResult:
    """A context-only request: the first token's text and the KV hand-over (context_phase_params)."""
    check = "context-only"
    body = {"text_input": settings.prompt, "max_tokens": settings.max_tokens, "request_type": "context_only"}
    try:
        response = httpx.post(
            f"{replica.http_url}/v2/models/{model}/generate", json=body, timeout=settings.timeout_s
        )
    except httpx.HTTPError as exc:
        return failed(check, model, _connect_error(exc))
    if response.status_code != 200:
        return failed(check, model, f"HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json()
    if not isinstance(answer.get("text_output"), str):
        return failed(check, model, f"text_output should be a string, got {answer.get('text_output')!r:.80}")
    params = answer.get("context_phase_params")
    if not params:
        return failed(check, model, "no context_phase_params in the answer")
    return passed(check, model, f"{len(params)} bytes of context_phase_params")


# --- every check of one model kind --------------------------------------------------------------------


def entry_checks(
    replica: Replica, model: str, settings: ConformanceSettings, *, streaming: bool = True
) -> list[CheckResult]:
    """Every check of a text model (ensemble, BLS, decode entry); a model served without streaming
    gets the non-streaming checks and must refuse ``stream=true``."""
    results = [
        entry_grpc(replica, model, settings, streaming=False),
        entry_generate(replica, model, settings, streaming=False),
        entry_log_probs(replica, model, settings),
        entry_perf_metrics(replica, model, settings),
        entry_stop_words(replica, model, settings),
    ]
    if not streaming:
        return [*results, stream_refused(replica, model, settings)]
    return [
        *results,
        entry_grpc(replica, model, settings, streaming=True),
        entry_generate(replica, model, settings, streaming=True),
        entry_cancel(replica, model, settings),
    ]


def engine_checks(
    replica: Replica, preprocessing: str, engine: str, settings: ConformanceSettings, *, streaming: bool = True
) -> list[CheckResult]:
    """Every check of an engine model; its prompt is tokenized by the pool's ``preprocessing``. An
    engine served without streaming (not decoupled) must refuse ``streaming=true``; stop and cancel
    act on streams, so they are checked on streaming engines."""
    names = (preprocessing, engine)
    results = [
        engine_grpc(replica, names, settings, streaming=False),
        engine_log_probs(replica, names, settings),
        engine_perf_metrics(replica, names, settings),
    ]
    if not streaming:
        return [*results, stream_refused(replica, preprocessing, settings, engine=engine)]
    return [
        *results,
        engine_grpc(replica, names, settings, streaming=True),
        engine_stop_request(replica, names, settings),
        engine_cancel(replica, names, settings),
    ]
