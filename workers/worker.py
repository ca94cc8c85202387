"""WorkerCore: one engine on one engine thread, speaking the worker side of `protocol.py`.

    caller threads                          engine thread (the only one touching the engine)
    submit_* / abort --> command queue --> apply the commands   (StageRunner: fetch, add, abort)
                                           runner.turn()        (one step, then one encode)
                                           publish events + load snapshot, under one lock
    poll(timeout) <----- one WorkerEvents: everything since the last poll (normally one step;
                         several, counted in num_steps, when the poller fell behind), token
                         deltas merged per request, so all requests of a step arrive together

When there is nothing to do the engine thread waits on a condition; it never spins. No Ray
here: `actor.py` (a Ray actor) and `local_client.py` (in-process) are thin shells around it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from workers.engine.config import EngineConfig
from workers.engine.engine import Engine
from workers.event_buffer import EventBuffer
from workers.protocol import DecodeJob, EncodeJob, PrefillJob, StageFailed, WorkerEvents, WorkerLoad
from workers.stage_runner import StageRunner
from workers.transport import Transport

logger = logging.getLogger(__name__)
STAGE_LETTERS = {"encode": "E", "prefill": "P", "decode": "D"}


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    engine: EngineConfig
    pool: str = ""  # the pool this worker belongs to
    model: str = ""  # the model's name in the cluster config
    torch_threads: int | None = None  # torch intra-op threads (process-wide); None: default

    @property
    def stages(self) -> str:
        return self.engine.stages


@dataclass(frozen=True)
class _Command:
    run: Callable[[], None]
    num_jobs: int = 0  # prefill/decode jobs it hands to the engine
    num_images: int = 0  # images it queues for encode


class WorkerCore:
    def __init__(self, config: WorkerConfig, transport: Transport, epoch: int | None = None):
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.config = config
        self.worker_id, self.stages = config.worker_id, config.stages
        self.pool, self.model = config.pool, config.model
        self.epoch = time.time_ns() if epoch is None else epoch  # larger after every restart
        self.transport = transport
        self.engine = Engine(config.engine)
        self._runner = StageRunner(self.worker_id, self.epoch, self.engine, transport)
        self.is_draining = False
        self._is_closed = False
        self._failure: BaseException | None = None  # what stopped the engine thread, if any
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._events_ready = threading.Condition(self._lock)
        self._commands: deque[_Command] = deque()  # not yet applied by the engine thread
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
        command = _Command(
            lambda: self._runner.queue_encode(job, arrival), num_images=len(job.images)
        )
        self._submit("encode", job.request_id, command)

    def submit_prefill(self, job: PrefillJob) -> None:
        arrival = self._runner.clock()
        if job.decode_here and "D" not in self.stages:
            reason = f"{self.worker_id} runs {self.stages}: it cannot decode here"
            self._report_failure(StageFailed(job.request_id, "prefill", reason, False))
            return
        command = _Command(lambda: self._runner.start_prefill(job, arrival), num_jobs=1)
        self._submit("prefill", job.request_id, command)

    def submit_decode(self, job: DecodeJob) -> None:
        arrival = self._runner.clock()
        command = _Command(lambda: self._runner.start_decode(job, arrival), num_jobs=1)
        self._submit("decode", job.request_id, command)

    def abort(self, request_id: str) -> None:
        """Drop the request's queued work and free its KV blocks. A request that was in the
        engine ends its stream with an "abort" TokenDelta; queued encodes just disappear."""
        with self._lock:
            self._commands.append(_Command(lambda: self._runner.abort(request_id)))
            self._work_ready.notify()

    def release(self, transfer_ids: list[str]) -> None:
        """Producer side: the consumers imported these arrays (or never will); free them."""
        for transfer_id in transfer_ids:
            self.transport.release(transfer_id)

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
        with self._lock:
            return self._load_locked()

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
        self._thread.join(timeout_s)

    def _submit(self, stage: str, request_id: str, command: _Command) -> None:
        if STAGE_LETTERS[stage] not in self.stages:
            reason = f"{self.worker_id} runs {self.stages}, not {stage}"
            self._report_failure(StageFailed(request_id, stage, reason, retriable=False))
            return
        with self._lock:
            if self.is_draining or self._is_closed:
                why = "draining" if self.is_draining else "closed"
                failure = StageFailed(request_id, stage, f"{self.worker_id} is {why}", True)
                self._events.failures.append(failure)
                self._events_ready.notify_all()
                return
            self._commands.append(command)
            self._work_ready.notify()

    def _report_failure(self, failure: StageFailed) -> None:
        with self._lock:
            self._events.failures.append(failure)
            self._events_ready.notify_all()

    def _load_locked(self) -> WorkerLoad:
        """The engine's load as of its last turn, plus the commands it has not applied yet."""
        engine_load = self._engine_load
        return replace(
            engine_load,
            is_draining=self.is_draining,
            num_encode_queued=engine_load.num_encode_queued
            + sum(command.num_images for command in self._commands),
            num_waiting=engine_load.num_waiting
            + sum(command.num_jobs for command in self._commands),
        )

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
                while not (self._commands or self._runner.has_work() or self._is_closed):
                    self._work_ready.wait()
                if self._is_closed:
                    return
                commands = list(self._commands)
            for command in commands:
                command.run()
            self._runner.turn()
            self._publish(num_applied=len(commands))

    def _publish(self, num_applied: int) -> None:
        """Commands leave the queue in the same lock as the load that counts them appears, so
        `load()` and `is_idle()` never miss a job in between."""
        engine_load = self._runner.measure_load()
        events = self._runner.take_events()
        with self._lock:
            for _ in range(num_applied):
                self._commands.popleft()
            self._engine_load = engine_load
            self._events.merge(events)
            if not self._events.is_empty():
                self._events_ready.notify_all()
