"""Triton python model: the tritonstack reference engine, a CPU stand-in for the ``tensorrt_llm`` model.

This is NOT TensorRT-LLM. It implements the TensorRT-LLM backend's ``tensorrt_llm`` tensor contract
(inputs, outputs, parameters, ``request_type`` for disaggregated serving, ``nv_trt_llm_*`` metric
families) on top of a small deterministic language model, so a whole tritonstack stack can run and
be tested on a machine without a GPU. See reference_lm.py for what the model guarantees.

It is as strict as the real backend where that shows: it loads only beside the ``backend_contract.json``
tritonstack's renderer writes, refuses the parameters the backend refuses (reference_backend.py), sends
outputs in the backend's order and only when the backend would (reference_contract.py), and answers
``stop=true`` as the backend does.

This file is the Triton glue only: tensors in, responses out, metrics. The engine itself
(reference_scheduler.py, reference_kv.py, reference_lm.py, reference_blob.py, reference_contract.py)
has no Triton import and is unit-tested on its own. Imports are limited to numpy, the standard
library and triton_python_backend_utils, so the files run unchanged in the stock NGC container.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from reference_backend import CONTRACT_FILE, BackendContract, check_parameters, read_backend_contract
from reference_contract import (
    INPUT_NAMES,
    EngineConfig,
    EnqueueError,
    ParsedRequest,
    check_requested_outputs,
    context_phase_blob,
    parse_batch,
    read_engine_config,
    response_arrays,
)
from reference_kv import KvBlockPool
from reference_lm import ENGINE_NAME, ReferenceEngineError, ReferenceLM, read_vocabulary
from reference_scheduler import BatcherSettings, BatcherStats, InflightBatcher, Outcomes, Sequence

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
TOKEN_LENGTH_BUCKETS = ("10", "50", "100", "500", "1000", "+Inf")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model_config = json.loads(args["model_config"])
        # What the real backend refuses, this engine refuses: see reference_backend.py.
        contract_path = os.path.join(args["model_repository"], args["model_version"], CONTRACT_FILE)
        self.contract: BackendContract = read_backend_contract(contract_path)
        check_parameters(self.contract, model_config)
        self.config: EngineConfig = read_engine_config(model_config, model_dir=args["model_repository"])
        vocab = read_vocabulary(self.config.tokenizer_dir)
        self.lm = ReferenceLM(vocab, self.config.seed)
        pool = KvBlockPool(
            self.config.kv_blocks, self.config.tokens_per_block, self.config.enable_kv_cache_reuse
        )
        self._stop = threading.Event()
        self.batcher = InflightBatcher(
            self.lm,
            pool,
            BatcherSettings(
                max_active=self.config.max_active,
                prefill_tokens_per_s=self.config.prefill_tokens_per_s,
                decode_tokens_per_s=self.config.decode_tokens_per_s,
                cancellation_check_period_s=self.config.cancellation_check_period_s,
                stats_period_s=self.config.stats_period_s,
            ),
            sleep=self._stop.wait,  # a simulated slow step ends at once when the model unloads
            log_error=pb_utils.Logger.log_error,
        )
        self.metrics = EngineMetrics(args["model_name"], args["model_version"])
        self.metrics.publish(self.batcher.last_stats, Outcomes())
        self._thread = threading.Thread(
            target=self.batcher.run,
            args=(self._stop, self._publish),
            name="reference-engine-scheduler",
            daemon=True,
        )
        self._thread.start()
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {ENGINE_NAME} (CPU stand-in for TensorRT-LLM, not a real LLM): "
            f"vocab {vocab.vocab_size}, weights seed {self.config.seed}, {self.config.kv_blocks} KV blocks x "
            f"{self.config.tokens_per_block} tokens, reuse {self.config.enable_kv_cache_reuse}, "
            f"decoupled {self.config.decoupled}, backend contract {self.contract.era}"
        )

    def execute(self, requests: list) -> list | None:
        waiting: list[tuple[BufferedSink | None, object]] = []
        for request in requests:
            sink = None
            sender = request.get_response_sender() if self.config.decoupled else None
            if _asks_to_stop(request):
                answer = self._answer_stop(request.request_id())
                if sender is not None:
                    sender.send(answer, flags=FINAL)
                else:
                    waiting.append((None, answer))
                continue
            try:
                # One ParsedRequest per batch row (parse_batch refuses batch > 1 unless decoupled).
                rows = self._parse(request)
                requested = frozenset(request.requested_output_names())
                check_requested_outputs(requested)
                if self.config.decoupled:
                    shared = RowsSender(sender, len(rows))
                    sinks = [StreamingSink(shared, parsed, requested, self) for parsed in rows]
                else:
                    (parsed,) = rows
                    sink = BufferedSink(request, parsed, requested, self)
                    sinks = [sink]
                self.batcher.submit_all([(p.engine_request, k) for p, k in zip(rows, sinks)])
            except ReferenceEngineError as exc:
                self.batcher.record_failure(_prompt_length(request))
                code = (
                    pb_utils.TritonError.INTERNAL
                    if isinstance(exc, EnqueueError)
                    else pb_utils.TritonError.INVALID_ARG
                )
                error = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))
                if sender is not None:
                    sender.send(error, flags=FINAL)
                else:
                    waiting.append((None, error))
                continue
            if not self.config.decoupled:
                waiting.append((sink, None))
        if self.config.decoupled:
            return None
        # Non-decoupled: the scheduler fills the buffers; block until every request here is done.
        responses = []
        for sink, error in waiting:
            responses.append(error if sink is None else sink.wait())
        return responses

    def finalize(self) -> None:
        self._stop.set()
        self.batcher.wake()
        self._thread.join()

    # ------------------------------------------------------------------ helpers

    def _parse(self, request) -> list[ParsedRequest]:
        inputs = {}
        for name in INPUT_NAMES:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            inputs[name] = None if tensor is None else tensor.as_numpy()
        try:
            parameters = json.loads(request.parameters() or "{}")
        except ValueError:
            parameters = {}
        return parse_batch(inputs, parameters, self.config, self.lm, request_id=request.request_id())

    def _answer_stop(self, request_id: str):
        """stop=true: the backend's handleStopRequest. It cancels the executor request(s) with this
        Triton request id and answers the stop request itself with an empty response (an error only
        when no id was given); the stopped request then ends normally.
        https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L860-L905
        (1.x: ModelInstanceState::handleStopRequest / sendEnqueueResponse in NVIDIA/TensorRT-LLM
        triton_backend/inflight_batcher_llm/src/model_instance_state.cc)
        """
        if not request_id:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError("Trying to stop a request but request ID is not provided")
            )
        self.batcher.stop_request(request_id)
        return pb_utils.InferenceResponse(output_tensors=[])

    def _publish(self, stats: BatcherStats) -> None:
        self.metrics.publish(stats, self.batcher.drain_outcomes())

    def response(
        self, sequence: Sequence, parsed: ParsedRequest, tokens: list[int], requested: frozenset[str]
    ):
        blob = None
        if parsed.engine_request.request_type == "context_only" and sequence.state.generated:
            blob = context_phase_blob(sequence, self.lm, self.config.tokens_per_block)
        arrays = response_arrays(
            sequence,
            parsed,
            tokens,
            requested,
            blob,
            batched=self.config.max_batch_size > 0,
            order=self.contract.response_order,
            flagged=self.contract.flagged_outputs,
        )
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, a) for n, a in arrays.items()])


def _prompt_length(request) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, "input_lengths")
    if tensor is None:
        return 0
    values = tensor.as_numpy().reshape(-1)
    return int(values[0]) if values.size else 0


def _cancelled_response():
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
    )


class RowsSender:
    """The one response sender of a Triton request, shared by its rows (one sequence each).

    Each row ends with one last response of its own; only the last row's carries the final flag, as
    in the backend's WaitForResponse (signalFinal when the row is the last pending one of its
    request):
    https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L1366-L1372
    (1.x: ModelInstanceState::WaitForResponse in NVIDIA/TensorRT-LLM
    triton_backend/inflight_batcher_llm/src/model_instance_state.cc). A request of one row is the
    plain case: its last response is final.
    """

    def __init__(self, sender, rows: int) -> None:
        self._sender = sender
        self._open = rows
        self._lock = threading.Lock()

    def send(self, response, last: bool) -> None:
        """Send one row's response; ``last``: the row's last one (it then counts as finished)."""
        with self._lock:
            if last:
                self._open -= 1
            self._sender.send(response, flags=FINAL if last and self._open <= 0 else 0)

    def is_cancelled(self) -> bool:
        return self._sender.is_cancelled()


class StreamingSink:
    """Decoupled model, one row: a response per token when streaming, else one last response.

    The row's responses go through its request's RowsSender (the final flag after every row ended).
    """

    def __init__(
        self, sender, parsed: ParsedRequest, requested: frozenset[str], model: TritonPythonModel
    ) -> None:
        self._sender: RowsSender = sender
        self._parsed = parsed
        self._requested = requested
        self._model = model
        self._ended = False

    def deliver(self, sequence: Sequence, tokens: list[int], final: bool) -> bool:
        streaming = self._parsed.streaming and self._parsed.engine_request.request_type != "context_only"
        if self._ended or not (streaming or final):
            return True
        response = self._model.response(sequence, self._parsed, tokens, self._requested)
        self._ended = final
        try:
            self._sender.send(response, last=final)
        except pb_utils.TritonModelException:
            return False  # the stream was closed by the client
        return True

    def is_cancelled(self) -> bool:
        return self._sender.is_cancelled()

    def cancelled(self, sequence: Sequence) -> None:
        self._close(_cancelled_response())

    def failed(self, message: str) -> None:
        self._close(
            pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE))
        )

    def _close(self, response) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._sender.send(response, last=True)
        except pb_utils.TritonModelException:
            pass  # nobody is listening any more; the sender is closed either way


class BufferedSink:
    """Non-decoupled model: execute() waits for the final response this sink builds."""

    def __init__(
        self, request, parsed: ParsedRequest, requested: frozenset[str], model: TritonPythonModel
    ) -> None:
        self._request = request
        self._parsed = parsed
        self._requested = requested
        self._model = model
        self._done = threading.Event()
        self._response = None

    def deliver(self, sequence: Sequence, tokens: list[int], final: bool) -> bool:
        if final:
            self._set(self._model.response(sequence, self._parsed, tokens, self._requested))
        return True

    def is_cancelled(self) -> bool:
        return self._request.is_cancelled()

    def cancelled(self, sequence: Sequence) -> None:
        self._set(_cancelled_response())

    def failed(self, message: str) -> None:
        self._set(
            pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE))
        )

    def _set(self, response) -> None:
        self._response = response
        self._done.set()

    def wait(self):
        self._done.wait()
        return self._response


class EngineMetrics:
    """The TensorRT-LLM backend's metric families (same names and labels), plus our outcome counter.

    This Triton build drops HISTOGRAM custom-metric families, so the two token-length histograms are
    exported as COUNTER families named ``<name>_bucket`` (label ``le``, cumulative), ``<name>_sum``
    and ``<name>_count``: the exposition has the sample names a histogram would have.
    """

    def __init__(self, model: str, version: str) -> None:
        base = {"model": model, "version": version}
        gauge, counter = pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.COUNTER
        # The families must outlive their metrics: keep every object on self.
        self._families = {}

        def family(name: str, description: str, kind) -> object:
            self._families[name] = pb_utils.MetricFamily(name=name, description=description, kind=kind)
            return self._families[name]

        def metrics(fam, label: str, values: tuple[str, ...]) -> dict[str, object]:
            return {v: fam.Metric(labels={**base, label: v}) for v in values}

        self.request = metrics(
            family("nv_trt_llm_request_metrics", "TRT LLM request metrics", gauge),
            "request_type",
            ("active", "max", "scheduled", "context", "waiting"),
        )
        self.memory = metrics(
            family("nv_trt_llm_runtime_memory_metrics", "TRT LLM runtime memory metrics", gauge),
            "memory_type",
            ("cpu", "gpu", "pinned"),
        )
        self.kv = metrics(
            family("nv_trt_llm_kv_cache_block_metrics", "TRT LLM KV cache block metrics", gauge),
            "kv_cache_block_type",
            ("max", "free", "used", "tokens_per", "reused", "fraction"),
        )
        self.batcher = metrics(
            family("nv_trt_llm_inflight_batcher_metrics", "TRT LLM inflight batcher metrics", gauge),
            "inflight_batcher_specific_metric",
            ("total_context_tokens", "generation_requests", "micro_batch_id", "paused_requests"),
        )
        self.general = metrics(
            family("nv_trt_llm_general_metrics", "General TRT LLM metrics", gauge),
            "general_type",
            ("timestamp", "iteration_counter"),
        )
        self.outcomes = metrics(
            family(
                "tritonstack_reference_engine_requests",
                "Requests finished by the tritonstack reference engine (CPU stand-in for TensorRT-LLM), by outcome",
                counter,
            ),
            "outcome",
            ("completed", "cancelled", "failed"),
        )
        self.token_lengths = {
            kind: self._histogram(family, base, name, kind, counter)
            for name, kind in (
                ("nv_llm_output_token_len", "total_output_tokens"),
                ("nv_llm_input_token_len", "total_input_tokens"),
            )
        }

    @staticmethod
    def _histogram(family, base: dict, name: str, kind: str, counter) -> dict[str, object]:
        labels = {**base, "response_metric_type": kind}
        description = f"TRT LLM {name.split('_')[2]} token length histogram (as counters; the CPU Triton build drops histograms)"
        buckets = family(f"{name}_bucket", description, counter)
        return {
            "buckets": {le: buckets.Metric(labels={**labels, "le": le}) for le in TOKEN_LENGTH_BUCKETS},
            "sum": family(f"{name}_sum", description, counter).Metric(labels=labels),
            "count": family(f"{name}_count", description, counter).Metric(labels=labels),
        }

    def publish(self, stats: BatcherStats, outcomes: Outcomes) -> None:
        for key, value in (
            ("active", stats.active),
            ("max", stats.max_active),
            ("scheduled", stats.scheduled),
            ("context", stats.context),
            ("waiting", stats.waiting),
        ):
            self.request[key].set(value)
        self.memory["cpu"].set(_resident_bytes())
        self.memory["gpu"].set(0)
        self.memory["pinned"].set(0)
        kv = stats.kv
        for key, value in (
            ("max", kv.max_blocks),
            ("free", kv.free_blocks),
            ("used", kv.used_blocks),
            ("tokens_per", kv.tokens_per_block),
            ("reused", kv.reused_blocks_total),
            ("fraction", kv.used_fraction),
        ):
            self.kv[key].set(value)
        self.batcher["total_context_tokens"].set(stats.total_context_tokens)
        self.batcher["generation_requests"].set(stats.generation_requests)
        self.batcher["micro_batch_id"].set(0)
        self.batcher["paused_requests"].set(0)
        self.general["timestamp"].set(stats.timestamp_us)
        self.general["iteration_counter"].set(stats.iteration)
        for outcome in ("completed", "cancelled", "failed"):
            count = getattr(outcomes, outcome)
            if count:
                self.outcomes[outcome].increment(count)
        self._observe(self.token_lengths["total_input_tokens"], outcomes.input_lengths)
        self._observe(self.token_lengths["total_output_tokens"], outcomes.output_lengths)

    @staticmethod
    def _observe(histogram: dict, values: list[int]) -> None:
        if not values:
            return
        lengths = np.asarray(values)
        for le, metric in histogram["buckets"].items():
            count = int(lengths.size if le == "+Inf" else np.count_nonzero(lengths <= int(le)))
            if count:
                metric.increment(count)
        histogram["sum"].increment(int(lengths.sum()))
        histogram["count"].increment(int(lengths.size))


def _resident_bytes() -> int:
    """This python-backend stub process's resident set size (what the engine holds in RAM)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _asks_to_stop(request) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, "stop")
    return tensor is not None and bool(tensor.as_numpy().any())
