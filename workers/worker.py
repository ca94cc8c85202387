"""WorkerCore: one engine on one engine thread, speaking the worker side of the contract
(workers/contract/messages.py), and driving the engine through engine_interface.py only.

    __init__: load the engine (engine_factory.py); with `profile_at_start`, measure it
              (profiler.py) and run with the step budgets derived from that; then start the
              engine thread

    caller threads                               engine thread (the only one touching it)
    submit_* / abort / release_paused
         |  --> command queue ----------------> apply the ready commands (StageRunner: add,
         |           ^                          abort, release paused KV)
         |           |                          runner.turn()  (one step, then encodes: budgets)
         v           |                          publish events + load snapshot, under one lock
    fetch threads: a job's arrays fetched and verified (job_inputs.py), so that running
                   decodes never wait on a transfer; the command is ready once they are in
    poll(timeout) <----- one WorkerEvents: everything since the last poll (normally one step;
                         several, counted in num_steps, when the poller fell behind), token
                         deltas merged per request, so all requests of a step arrive together

When there is nothing to do the engine thread waits on a condition; it never spins (holding
paused KV, it wakes every PAUSE_EXPIRY_CHECK_S for a turn that expires it). No Ray
here: `actor.py` (a Ray actor) and `local_client.py` (in-process) are thin shells around it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from workers.command_queue import Command, CommandQueue
from workers.contract.cost_profile import WorkerProfile
from workers.contract.messages import (
    DecodeJob,
    EncodeJob,
    PrefillJob,
    StageFailed,
    WorkerEvents,
    WorkerLoad,
)
from workers.contract.worker_config import WorkerConfig
from workers.engine_factory import build_engine
from workers.event_buffer import EventBuffer
from workers.job_arrivals import JobArrivals
from workers.job_stages import refusal, stage_of
from workers.profiler import profile_worker, untargeted_budgets
from workers.stage_runner import StageRunner
from workers.transport import Transport
from workers.worker_load import with_cache_contents, with_queued

logger = logging.getLogger(__name__)
PAUSE_EXPIRY_CHECK_S = 1.0  # an idle worker holding paused KV looks for expired entries this often


class WorkerCore:
    def __init__(self, config: WorkerConfig, transport: Transport, epoch: int | None = None):
        self.config = config
        self.worker_id, self.stages = config.worker_id, config.stages
        self.pool, self.model = config.pool, config.model
        self.epoch = time.time_ns() if epoch is None else epoch  # larger after every restart
        self.transport = transport
        self.engine = build_engine(config)
        self.profile: WorkerProfile | None = None  # measured before the engine thread starts
        self.budgets = untargeted_budgets(config.engine)  # what each turn may take on
        if config.profile_at_start:
            self.profile = profile_worker(self.engine, config.tpot_target_ms)
            self.budgets = self.profile.budgets
        if config.engine.has_language_model:
            self.engine.set_token_budget(self.budgets.max_num_batched_tokens)
        self._runner = StageRunner(
            worker_id=self.worker_id,
            epoch=self.epoch,
            engine=self.engine,
            transport=transport,
            max_encode_images=self.budgets.max_encode_images,
        )
        self.is_draining = False
        self._is_closed = False
        self._failure: BaseException | None = None  # what stopped the engine thread, if any
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._events_ready = threading.Condition(self._lock)
        self._commands = CommandQueue()  # not yet applied by the engine thread
        self._request_ids: set[str] = set()  # with a job here, until its end is published
        self._arrivals = JobArrivals()  # jobs that came, and aborts that came before their job
        self._fetch_pool = ThreadPoolExecutor(
            config.num_fetch_threads, thread_name_prefix=f"fetch-{self.worker_id}"
        )
        self._events = EventBuffer()  # published, not yet polled
        self._engine_load = self._runner.measure_load()  # as of the end of the last turn
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.worker_id}")
        self._thread.daemon = True
        self._thread.start()

    # ----------------------------------------------------------------- caller side
    # A job's queue time starts here, when it reaches the worker, not when the engine thread
    # gets to it.
    def submit_encode(self, job: EncodeJob) -> None:
        arrival = self._runner.clock()
        start = partial(self._runner.queue_encode, job, arrival)
        self._submit(job, start, num_images=len(job.images))

    def submit_prefill(self, job: PrefillJob) -> None:
        arrival = self._runner.clock()
        fetches = any(item.ref is not None for item in job.images)
        fetch = partial(self._runner.fetcher.embeddings, job) if fetches else None
        start = partial(self._runner.start_prefill, job, arrival)
        self._submit(job, start, fetch, num_jobs=1)

    def submit_decode(self, job: DecodeJob) -> None:
        arrival = self._runner.clock()
        fetch = partial(self._runner.fetcher.kv, job)
        start = partial(self._runner.start_decode, job, arrival)
        self._submit(job, start, fetch, num_jobs=1)

    def abort(self, request_id: str) -> None:
        """Drop the request's queued work and free its KV blocks. A request that was in the
        engine ends its stream with an "abort" TokenDelta; queued encodes just disappear. An
        abort waits for its job's fetch, if one is under way, and then aborts the job. One that
        comes before its job is remembered, and the job dropped when it comes (job_arrivals.py):
        either way the engine never steps it again."""
        with self._lock:
            self._arrivals.abort(request_id)
            self._request_ids.discard(request_id)
            self._commands.append(Command(lambda: self._runner.abort(request_id), request_id))
            self._work_ready.notify()

    def abort_all(self) -> None:
        """Abort every job here and free every array exported: a restarted control plane takes
        the worker back (the old one's requests have no listener, their arrays no consumer)."""
        with self._lock:
            request_ids = list(self._request_ids)
        for request_id in request_ids:
            self.abort(request_id)
        self.release(self.transport.held(self.worker_id))

    def release(self, transfer_ids: list[str]) -> None:
        """Producer side: the consumers imported these arrays (or never will); free them."""
        for transfer_id in transfer_ids:
            self.transport.release(transfer_id)

    def release_paused(self, request_ids: list[str]) -> None:
        """Free paused requests' KV (sessions), in order behind the commands before; each
        release comes once in `pauses_released`, an id not paused here does nothing."""
        with self._lock:
            for request_id in request_ids:
                run = partial(self._runner.release_paused, request_id)
                self._commands.append(Command(run, request_id))
            self._work_ready.notify()

    def poll(self, timeout_s: float) -> WorkerEvents:
        """Wait up to `timeout_s` for events; return all of them since the last poll. Raises
        RuntimeError if the engine thread died, so that the caller replaces this worker."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if self._failure is not None:
                raise RuntimeError(f"{self.worker_id} stopped: {self._failure!r}")
            while self._events.is_empty() and not self._is_closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._events_ready.wait(remaining)
            events, self._events = self._events, EventBuffer()
            load = self._load_locked()
        return events.to_message(self.worker_id, self.epoch, load)

    def load(self) -> WorkerLoad:
        """The load, with every embedding cache key and prefix block hash: O(cache size), so
        only here (each poll carries their counts, and what changed), and the start-up
        profile."""
        with self._lock:
            load = self._load_locked()
        return with_cache_contents(load, self.engine, self.profile)

    def drain(self) -> None:
        """Refuse new jobs (retriably) from now on; the work already here runs to its end."""
        with self._lock:
            self.is_draining = True

    def is_idle(self) -> bool:
        """Nothing queued or running, and no transfer of ours still waiting for its consumer."""
        with self._lock:
            is_idle = not self._commands and self._load_locked().num_active == 0
        return is_idle and not self.transport.held(self.worker_id)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the engine thread (queued work is dropped); later jobs fail retriably."""
        with self._lock:
            self._is_closed = True
            self._work_ready.notify_all()
            self._events_ready.notify_all()
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        self._thread.join(timeout_s)

    def _submit(
        self,
        job: EncodeJob | PrefillJob | DecodeJob,
        start: Callable[..., None],  # on the engine thread; given fetch's Future, if any
        fetch: Callable[[], Any] | None = None,  # on a fetch thread, before `start`
        num_jobs: int = 0,
        num_images: int = 0,
    ) -> None:
        request_id, stage = job.request_id, stage_of(job)
        reason = refusal(self.worker_id, self.stages, job)
        if reason is not None:
            failure = StageFailed(
                request_id=request_id, stage=stage, reason=reason, retriable=False
            )
            self._report_failure(failure)
            return
        with self._lock:
            # An abort that overtook its job ("past it"): the scheduler drops this failure.
            is_aborted = not self._arrivals.arrive(request_id)
            if self.is_draining or self._is_closed or is_aborted:
                why = "draining" if self.is_draining else "closed" if self._is_closed else "past it"
                failure = StageFailed(
                    request_id=request_id,
                    stage=stage,
                    reason=f"{self.worker_id} is {why}",
                    retriable=True,
                )
                self._events.failures.append(failure)
                self._events_ready.notify_all()
                return
            inputs = self._fetch_pool.submit(fetch) if fetch is not None else None
            run = partial(start, inputs) if inputs is not None else start
            self._commands.append(Command(run, request_id, num_jobs, num_images, inputs))
            self._request_ids.add(request_id)
            self._work_ready.notify()
        if inputs is not None:  # outside the lock: a done future runs the callback right here
            inputs.add_done_callback(self._on_fetched)

    def _on_fetched(self, _: Future[Any]) -> None:
        with self._lock:
            self._work_ready.notify()

    def _report_failure(self, failure: StageFailed) -> None:
        with self._lock:
            self._events.failures.append(failure)
            self._events_ready.notify_all()

    def _load_locked(self) -> WorkerLoad:
        return with_queued(self._engine_load, self.is_draining, self._commands)

    # ----------------------------------------------------------------- engine thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug in this file: make it loud, not a silent hang
            logger.exception("engine thread of %s stopped", self.worker_id)
            with self._lock:
                self._failure, self._is_closed = e, True
                self._events_ready.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (
                    (commands := self._commands.ready())
                    or self._runner.has_work()
                    or self._is_closed
                ):
                    if not self._engine_load.num_paused:
                        self._work_ready.wait()
                    elif not self._work_ready.wait(PAUSE_EXPIRY_CHECK_S):
                        break  # idle, but paused KV may expire: a turn checks (stage_runner.py)
                if self._is_closed:
                    return
            for command in commands:
                command.run()
            self._runner.turn()
            self._publish(applied=commands)

    def _publish(self, applied: list[Command]) -> None:
        """Commands leave the queue in the same lock as the load that counts them appears, so
        `load()` and `is_idle()` never miss a job in between."""
        engine_load = self._runner.measure_load()
        events = self._runner.take_events()
        with self._lock:
            self._commands.remove(applied)
            self._engine_load = engine_load
            self._events.merge(events)
            ended = [*events.encodes, *events.prefills, *events.failures]  # an export: handed off
            ended += [delta for delta in events.tokens.values() if delta.finish_reason]
            self._request_ids -= {event.request_id for event in ended}
            if not self._events.is_empty():
                self._events_ready.notify_all()
