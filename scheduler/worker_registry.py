"""The workers the scheduler knows: their clients, last reported load and epoch, and the calls
that fan out to several of them (abort, release).

A worker whose poll failed is *suspected* (poller.py): it takes no new work and gets no call;
the aborts and releases meant for it wait on its slot until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from scheduler.policy import WorkerView
from scheduler.snapshot import WorkerSnapshot
from scheduler.stage import Stage
from workers.contract.messages import EmbeddingInput, WorkerLoad
from workers.contract.worker_client import WorkerClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingTransfer:
    """An array a producer holds for a consumer until the scheduler releases it."""

    transfer_id: str
    kind: str  # "embedding" or "kv"
    producer_id: str
    nbytes: int


@dataclass(frozen=True)
class OutstandingJob:
    """An encode or prefill job given to a worker and not yet done."""

    stage: Stage
    predicted_ms: float  # its compute, as the cost model predicted at dispatch
    dispatched_ms: float  # scheduler clock, ms
    priority: float = 0.0  # the PrefillJob's priority (its latest start); 0 for encodes


@dataclass
class WorkerSlot:
    client: WorkerClient
    load: WorkerLoad
    epoch: int
    num_dispatched_since_load: int = 0
    is_draining: bool = False
    poll_task: asyncio.Task | None = None
    # Encode and prefill jobs given and not done, by (job id, stage): the worker's backlog.
    outstanding: dict[tuple[str, Stage], OutstandingJob] = field(default_factory=dict)
    # Requests decoding here (decode_here prefills included) -> their prompt length.
    decoding: dict[str, int] = field(default_factory=dict)
    # When its poll first failed (event-loop clock, s); None while it answers.
    suspected_since_s: float | None = None
    # Aborts (job ids) and releases (transfer ids) held back while it is suspected: sent when
    # it answers with the same epoch, dropped when it restarted (they went with the process).
    deferred_aborts: list[str] = field(default_factory=list)
    deferred_releases: list[str] = field(default_factory=list)

    @property
    def is_suspected(self) -> bool:
        return self.suspected_since_s is not None

    def backlog_ms(self, now_ms: float, prefill_priority: float | None = None) -> float:
        """Predicted work still ahead of a new job, less what the oldest job has presumably
        done since it was dispatched (the worker runs one at a time). For a prefill of
        `prefill_priority`, prefills of a later priority are not ahead: the worker gives it
        the step's budget first (batcher.py). None: all outstanding work."""
        ahead = [
            job
            for job in self.outstanding.values()
            if prefill_priority is None
            or job.stage is not Stage.PREFILL
            or job.priority <= prefill_priority
        ]
        if not ahead:
            return 0.0
        oldest = min(ahead, key=lambda job: job.dispatched_ms)
        done = min(oldest.predicted_ms, max(0.0, now_ms - oldest.dispatched_ms))
        return sum(job.predicted_ms for job in ahead) - done

    @property
    def worker_id(self) -> str:
        return self.client.worker_id

    def observe(self, load: WorkerLoad) -> None:
        self.load = load
        self.epoch = load.epoch
        self.num_dispatched_since_load = 0

    def view(self, now_ms: float = 0.0) -> WorkerView:
        return WorkerView(
            worker_id=self.worker_id,
            model=self.client.model,
            stages=self.client.stages,
            is_draining=self.is_draining or self.load.is_draining or self.is_suspected,
            num_active=self.load.num_active + self.num_dispatched_since_load,
            backlog_ms=self.backlog_ms(now_ms),
        )

    def snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            worker_id=self.worker_id,
            pool=self.client.pool,
            model=self.client.model,
            stages=self.client.stages,
            epoch=self.epoch,
            is_draining=self.is_draining,
            is_suspected=self.is_suspected,
            load=self.load,
            num_dispatched_since_load=self.num_dispatched_since_load,
        )


class WorkerRegistry:
    def __init__(self) -> None:
        self._slots: dict[str, WorkerSlot] = {}

    def add(self, slot: WorkerSlot) -> None:
        if slot.worker_id in self._slots:
            raise ValueError(f"worker {slot.worker_id!r} is already registered")
        self._slots[slot.worker_id] = slot

    def pop(self, worker_id: str) -> WorkerSlot | None:
        return self._slots.pop(worker_id, None)

    def get(self, worker_id: str | None) -> WorkerSlot | None:
        return self._slots.get(worker_id) if worker_id is not None else None

    def __getitem__(self, worker_id: str) -> WorkerSlot:
        if worker_id not in self._slots:
            raise KeyError(f"unknown worker {worker_id!r}")
        return self._slots[worker_id]

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._slots

    def __iter__(self) -> Iterator[WorkerSlot]:
        return iter(list(self._slots.values()))

    def views(self, now_ms: float = 0.0) -> list[WorkerView]:
        return [slot.view(now_ms) for slot in self._slots.values()]

    def epochs_of(self, embeddings: Iterable[EmbeddingInput]) -> dict[str, int]:
        """Producer id -> its epoch as last reported, for the receiver to check."""
        refs = [e.ref for e in embeddings if e.ref is not None]
        return {
            r.producer_id: self._slots[r.producer_id].epoch for r in refs if r.producer_id in self
        }

    async def abort(self, worker_ids: Iterable[str], job_id: str) -> None:
        slots = [self._slots[w] for w in sorted(worker_ids) if w in self._slots]
        for slot in slots:
            if slot.is_suspected:
                slot.deferred_aborts.append(job_id)
        slots = [slot for slot in slots if not slot.is_suspected]
        results = await asyncio.gather(
            *(slot.client.abort(job_id) for slot in slots), return_exceptions=True
        )
        for slot, result in zip(slots, results, strict=True):
            if isinstance(result, Exception):
                logger.warning("abort of %s on %s failed: %r", job_id, slot.worker_id, result)

    async def release(self, transfers: Iterable[PendingTransfer]) -> None:
        """Tell each producer it may free these arrays. A gone producer took them with it."""
        by_producer: dict[str, list[str]] = {}
        for transfer in transfers:
            by_producer.setdefault(transfer.producer_id, []).append(transfer.transfer_id)
        for producer_id, transfer_ids in by_producer.items():
            slot = self._slots.get(producer_id)
            if slot is None:
                continue
            if slot.is_suspected:
                slot.deferred_releases.extend(transfer_ids)
                continue
            try:
                await slot.client.release(transfer_ids)
            except Exception as error:  # the producer is going away; its poll will tell
                logger.warning("release on %s failed: %r", producer_id, error)

    async def send_deferred(self, slot: WorkerSlot) -> None:
        """A suspected worker answered with its old epoch: it may still hold the jobs and the
        arrays the scheduler gave up while it was silent; abort and release them now."""
        aborts, releases = slot.deferred_aborts, slot.deferred_releases
        slot.deferred_aborts, slot.deferred_releases = [], []
        results = await asyncio.gather(
            *(slot.client.abort(job_id) for job_id in aborts),
            *([slot.client.release(releases)] if releases else []),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Exception):  # its next poll will tell
                logger.warning("deferred call on %s failed: %r", slot.worker_id, result)
