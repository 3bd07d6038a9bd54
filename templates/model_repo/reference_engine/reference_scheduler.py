"""In-flight batching for the tritonstack reference engine (no Triton imports: unit-testable).

One scheduler thread owns every sequence. Each iteration it

1. moves newly submitted requests to the waiting queue (FIFO);
2. admits waiting requests while the batch has room and the KV pool can reserve their blocks;
3. checks cancellation (every ``cancellation_check_period_s`` per sequence, like TRT-LLM's
   ``cancellation_check_period_ms``) and drops cancelled sequences, freeing their blocks;
4. runs one batched forward pass: newly admitted sequences get their first token (the prefill),
   running sequences their next one; a ``generation_only`` sequence replays the first token the
   context server produced instead of sampling it;
5. sleeps whatever the configured prefill/decode speeds say the iteration should have taken;
6. hands each new token to its sequence's sink (which streams it, or buffers it).

``execute()`` only validates and submits, so a long stream never blocks other requests, and
concurrent streams interleave token by token.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from reference_blob import ContextPhaseState
from reference_kv import BlockAllocation, KvBlockPool, KvStats
from reference_lm import (
    ENGINE_NAME,
    ReferenceEngineError,
    ReferenceLM,
    SamplingParams,
    SequenceState,
    choose_tokens,
    natural_length,
)

__all__ = [
    "BatcherSettings",
    "BatcherStats",
    "EngineRequest",
    "InflightBatcher",
    "Outcomes",
    "Sequence",
    "SequenceSink",
    "REQUEST_TYPES",
]

REQUEST_TYPES = ("context_and_generation", "context_only", "generation_only")


class SequenceSink(Protocol):
    """Where a sequence's tokens go (a Triton response sender, or a buffer for non-decoupled models)."""

    def deliver(self, sequence: Sequence, tokens: list[int], final: bool) -> bool:
        """Pass new tokens on; return False when the client is gone (counts as a cancellation)."""

    def is_cancelled(self) -> bool: ...

    def cancelled(self, sequence: Sequence) -> None:
        """The sequence was dropped because the client cancelled; close the stream."""

    def failed(self, message: str) -> None:
        """The sequence could not run (engine stopping); answer with this error."""


@dataclass(frozen=True, eq=False)
class EngineRequest:
    request_id: str
    prompt: np.ndarray  # int32 token ids
    params: SamplingParams
    request_type: str = "context_and_generation"
    resume: ContextPhaseState | None = None  # generation_only: what the context server sent


@dataclass(eq=False)  # identity: sequences are tracked in lists by object
class Sequence:
    request: EngineRequest
    state: SequenceState
    sink: SequenceSink
    arrival_ns: int
    allocation: BlockAllocation | None = None
    first_scheduled_ns: int = 0
    first_token_ns: int = 0
    last_token_ns: int = 0
    next_cancel_check: float = 0.0


@dataclass(frozen=True)
class BatcherSettings:
    max_active: int
    prefill_tokens_per_s: float | None = None  # None: as fast as the CPU allows
    decode_tokens_per_s: float | None = None  # per sequence, i.e. iterations per second
    cancellation_check_period_s: float = 0.1
    stats_period_s: float = 0.1


@dataclass(frozen=True)
class BatcherStats:
    """One iteration's view, shaped like TRT-LLM's iteration stats."""

    active: int
    max_active: int
    scheduled: int
    context: int
    waiting: int
    total_context_tokens: int
    generation_requests: int
    iteration: int
    timestamp_us: int
    kv: KvStats


@dataclass
class Outcomes:
    """Finished requests since the last drain (published as counters)."""

    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    input_lengths: list[int] = field(default_factory=list)
    output_lengths: list[int] = field(default_factory=list)


class InflightBatcher:
    def __init__(
        self,
        lm: ReferenceLM,
        pool: KvBlockPool,
        settings: BatcherSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_ns: Callable[[], int] = time.time_ns,
        log_error: Callable[[str], None] = print,
    ) -> None:
        self.lm = lm
        self.pool = pool
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._wall_ns = wall_ns
        self._log_error = log_error
        self._wakeup = threading.Condition()
        self._incoming: deque[Sequence] = deque()
        self._waiting: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._outcomes = Outcomes()
        self._outcomes_lock = threading.Lock()
        self._iteration = 0
        self._last = self._empty_stats()
        # Request ids a client asked to stop (the TRT-LLM backend's "stop" input: a second request
        # with the same id and stop=true); the scheduler thread drops them at its next step.
        self._stop_ids: set[str] = set()
        self._stop_lock = threading.Lock()

    # ------------------------------------------------------------------ called from execute()

    def submit(self, request: EngineRequest, sink: SequenceSink) -> Sequence:
        """Queue a validated request; raises ReferenceEngineError if it could never be served."""
        return self.submit_all([(request, sink)])[0]

    def submit_all(self, rows: list[tuple[EngineRequest, SequenceSink]]) -> list[Sequence]:
        """Queue the rows of one Triton request together, or none of them: every row is checked
        before any is queued (the backend builds all executor requests of a batched Triton request
        before it enqueues them, and one bad row fails the whole request), and they reach the
        waiting queue in row order in the same step."""
        for request, _ in rows:
            self._check(request)
        sequences = [self._sequence(request, sink) for request, sink in rows]
        with self._wakeup:
            self._incoming.extend(sequences)
            self._wakeup.notify()
        return sequences

    def _check(self, request: EngineRequest) -> None:
        if request.request_type not in REQUEST_TYPES:
            raise ReferenceEngineError(
                f"request_type {request.request_type!r} is not one of {', '.join(REQUEST_TYPES)}"
            )
        budget = 1 if request.request_type == "context_only" else request.params.max_new_tokens
        if not self.pool.fits_ever(len(request.prompt), budget):
            needed = self.pool.blocks_for(len(request.prompt) + budget)
            raise ReferenceEngineError(
                f"the sequence needs {needed} KV blocks ({len(request.prompt)} prompt + {budget} output tokens) "
                f"but the whole cache holds {self.pool.num_blocks}; raise kv_blocks / max_tokens_in_paged_kv_cache "
                "or lower max_tokens"
            )

    def _sequence(self, request: EngineRequest, sink: SequenceSink) -> Sequence:
        state = SequenceState(
            prompt=request.prompt,
            params=request.params,
            natural_end=natural_length(self.lm.seed, request.prompt),
        )
        return Sequence(request=request, state=state, sink=sink, arrival_ns=self._wall_ns())

    def stop_request(self, request_id: str) -> None:
        """Stop the sequence(s) with this request id (every row of a batched request shares it): they
        end at the next step with a normal final response (counted as cancelled); an unknown id is no
        error (the request may have finished)."""
        with self._stop_lock:
            self._stop_ids.add(request_id)
        self.wake()

    def record_failure(self, input_length: int) -> None:
        """Count a request refused before it reached the scheduler."""
        with self._outcomes_lock:
            self._outcomes.failed += 1
            self._outcomes.input_lengths.append(input_length)

    def drain_outcomes(self) -> Outcomes:
        with self._outcomes_lock:
            outcomes, self._outcomes = self._outcomes, Outcomes()
        return outcomes

    @property
    def last_stats(self) -> BatcherStats:
        return self._last

    # ------------------------------------------------------------------ the scheduler thread

    def run(self, stop: threading.Event, on_stats: Callable[[BatcherStats], None]) -> None:
        """Loop until ``stop`` is set; report stats every ``stats_period_s`` (also while idle)."""
        next_report = 0.0
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # noqa: BLE001  a bug must not silently hang every open stream
                self._log_error(f"reference engine scheduler error: {exc!r}")
                self._fail_everything(f"internal error in the {ENGINE_NAME}: {exc}")
                busy = False
            now = self._clock()
            if now >= next_report:
                on_stats(self._last)
                next_report = now + self.settings.stats_period_s
            if not busy:
                with self._wakeup:
                    if not self._incoming and not stop.is_set():
                        self._wakeup.wait(timeout=self.settings.stats_period_s)
        self._fail_everything("the model is being unloaded")

    def wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def step(self) -> bool:
        """One iteration; returns False when there was nothing to do."""
        started = self._clock()
        with self._wakeup:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        self._drop_cancelled(started)
        admitted = self._admit()
        if not self._active:
            self._last = self._stats(0, 0, 0)
            return False
        self._iteration += 1
        now_ns = self._wall_ns()
        replayed: list[Sequence] = []
        sampled: list[Sequence] = []
        prefill_tokens = 0
        for sequence in self._active:
            if sequence in admitted:
                sequence.first_scheduled_ns = now_ns
                reused_tokens = sequence.allocation.reused_blocks * self.pool.tokens_per_block
                if sequence.request.request_type == "generation_only":
                    replayed.append(sequence)  # its KV "arrived" from the context server
                    continue
                prefill_tokens += len(sequence.request.prompt) - reused_tokens
            sampled.append(sequence)
        tokens = choose_tokens(self.lm, [s.state for s in sampled])
        self._simulate_compute(started, prefill_tokens, decoding=len(self._active) > len(admitted))
        for sequence in replayed:
            self._advance(sequence, sequence.request.resume.first_token)
        for sequence, token in zip(sampled, tokens):
            self._advance(sequence, token)
        contexts = len(admitted)
        self._last = self._stats(len(sampled) + len(replayed), contexts, prefill_tokens)
        return True

    # ------------------------------------------------------------------ internals

    def _admit(self) -> list[Sequence]:
        admitted = []
        while self._waiting and len(self._active) < self.settings.max_active:
            sequence = self._waiting[0]
            request = sequence.request
            budget = 1 if request.request_type == "context_only" else request.params.max_new_tokens
            allocation = self.pool.admit(request.prompt.tolist(), budget)
            if allocation is None:
                break  # FIFO: the head waits for blocks; later requests do not overtake it
            self._waiting.popleft()
            sequence.allocation = allocation
            self._active.append(sequence)
            admitted.append(sequence)
        return admitted

    def _drop_cancelled(self, now: float) -> None:
        period = self.settings.cancellation_check_period_s
        with self._stop_lock:
            stop_ids, self._stop_ids = self._stop_ids, set()
        for queue_name, sequences in (("waiting", list(self._waiting)), ("active", list(self._active))):
            for sequence in sequences:
                stopped = sequence.request.request_id in stop_ids
                if now < sequence.next_cancel_check and not stopped:
                    continue
                sequence.next_cancel_check = now + period
                if stopped or sequence.sink.is_cancelled():
                    if queue_name == "waiting":
                        self._waiting.remove(sequence)
                    self._finish(sequence, "cancelled")
                    if stopped:
                        self._end_stopped(sequence)
                    else:
                        sequence.sink.cancelled(sequence)

    def _end_stopped(self, sequence: Sequence) -> None:
        """A sequence stopped by a ``stop`` request ends normally: one final response, no error.

        The backend cancels it in the executor (handleStopRequest -> Executor::cancelRequest), which
        terminates it with finish reason CANCELLED and sends its final result like any other:
        https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.19.0/inflight_batcher_llm/src/model_instance_state.cc#L871-L905
        https://github.com/NVIDIA/TensorRT-LLM/blob/main/cpp/tensorrt_llm/executor/executorImpl.cpp
        (Executor::Impl::terminateCancelledRequests). Streaming: the final response holds no new token.
        """
        try:
            sequence.sink.deliver(sequence, [], final=True)
        except Exception as exc:  # noqa: BLE001  one broken response fails its request, not the engine
            self._log_error(f"reference engine could not build a response: {exc!r}")
            sequence.sink.failed(f"internal error in the {ENGINE_NAME}: {exc}")

    def _simulate_compute(self, started: float, prefill_tokens: int, decoding: bool) -> None:
        target = 0.0
        if prefill_tokens and self.settings.prefill_tokens_per_s:
            target += prefill_tokens / self.settings.prefill_tokens_per_s
        if decoding and self.settings.decode_tokens_per_s:
            target += 1.0 / self.settings.decode_tokens_per_s
        remaining = target - (self._clock() - started)
        if remaining > 0:
            self._sleep(remaining)

    def _advance(self, sequence: Sequence, token: int) -> None:
        state = sequence.state
        reason = state.append(token)
        if reason is None and sequence.request.request_type == "context_only":
            reason = state.finish_reason = "context_done"
        self.pool.grow(sequence.allocation, state.position)
        now_ns = self._wall_ns()
        if not sequence.first_token_ns:
            sequence.first_token_ns = now_ns
        sequence.last_token_ns = now_ns
        try:
            delivered = sequence.sink.deliver(sequence, [token], final=reason is not None)
        except Exception as exc:  # noqa: BLE001  one broken response fails its request, not the engine
            self._log_error(f"reference engine could not build a response: {exc!r}")
            self._finish(sequence, "failed")
            sequence.sink.failed(f"internal error in the {ENGINE_NAME}: {exc}")
            return
        if not delivered:
            self._finish(sequence, "cancelled")  # the client went away
            return
        if reason is not None:
            self._finish(sequence, "completed")

    def _finish(self, sequence: Sequence, outcome: str) -> None:
        if sequence.allocation is not None:
            tokens = sequence.request.prompt.tolist() + sequence.state.generated
            self.pool.release(sequence.allocation, tokens)
        if sequence in self._active:
            self._active.remove(sequence)
        if outcome == "cancelled":
            sequence.state.finish_reason = "cancelled"
        with self._outcomes_lock:
            setattr(self._outcomes, outcome, getattr(self._outcomes, outcome) + 1)
            self._outcomes.input_lengths.append(len(sequence.request.prompt))
            self._outcomes.output_lengths.append(len(sequence.state.generated))

    def _fail_everything(self, message: str) -> None:
        with self._wakeup:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        for sequence in list(self._waiting) + list(self._active):
            self._finish(sequence, "failed")
            with contextlib.suppress(Exception):  # a sink that cannot answer any more has nobody to tell
                sequence.sink.failed(message)
        self._waiting.clear()
        self._active.clear()

    def _stats(self, scheduled: int, contexts: int, context_tokens: int) -> BatcherStats:
        return BatcherStats(
            active=len(self._active),
            max_active=self.settings.max_active,
            scheduled=scheduled,
            context=contexts,
            waiting=len(self._waiting),
            total_context_tokens=context_tokens,
            generation_requests=scheduled - contexts,
            iteration=self._iteration,
            timestamp_us=self._wall_ns() // 1000,
            kv=self.pool.stats(),
        )

    def _empty_stats(self) -> BatcherStats:
        return self._stats(0, 0, 0)
