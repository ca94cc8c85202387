"""An in-process WorkerClient with a deterministic stand-in engine, for scheduler tests.

    embedding of an image  = sum of its bytes % 1000
    prompt KV              = sum(prompt ids) + sum(embeddings of its images)
    token at position i    = (prompt KV + i) % 1000          (i = 0: the first token)

A resumed job (`num_resumed_tokens` n > 0) computes the prompt KV over the prompt without its
last n tokens, checks that those are the tokens it would have written (a job that resumes after
other tokens fails for good), and goes on at position n, as the engine does.

So a decoder that imports the wrong KV, or a prefill that reads the wrong embeddings, writes
different tokens. Each poll runs one engine step over everything queued and running and
reports it in one WorkerEvents, as a real worker does. Arrays live in a shared FakeTransport
(fake_transport.py); a consumer checks the checksum and the producer's epoch, as a real one does.

Every stage of a job reports the same times: QUEUE_MS waiting, then STEP_MS per step.

A job with a pause plan that finishes stays "paused" (one pinned block) until a prefill job
resumes it (`resume_from`, on any worker, whatever its stages), `release_paused` or the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from tests.scheduler.fake_transport import FakeTransport
from workers.contract.cost_profile import WorkerProfile
from workers.contract.messages import (
    DecodeJob,
    EmbeddingInput,
    EncodeDone,
    EncodeJob,
    ImageInput,
    PausedKV,
    PauseReleased,
    PrefillDone,
    PrefillJob,
    StageFailed,
    TokenDelta,
    TransferConsumed,
    TransferRef,
    WorkerEvents,
    WorkerLoad,
)

QUEUE_MS = 0.25  # every job's queue time, in every stage
STEP_MS = 1.0  # every engine step's time, and every encode's


def embedding_of(image: ImageInput) -> int:
    return sum(image.data) % 1000


def expected_tokens(prompt: Sequence[int], images: Sequence[ImageInput], n: int) -> list[int]:
    kv = sum(prompt) + sum(embedding_of(image) for image in images)
    return [(kv + i) % 1000 for i in range(n)]


@dataclass
class _Running:
    job_id: str
    kv: int
    max_tokens: int
    num_tokens: int  # generated so far, the first token (and resumed ones) included
    has_decoded: bool = False
    pause: bool = False  # stays paused when it finishes


class FakeWorker:
    def __init__(
        self,
        worker_id: str,
        stages: str,
        transport: FakeTransport,
        model: str = "tiny",
        num_cached_tokens: int = 0,  # reported by every PrefillDone
        profile: WorkerProfile | None = None,  # what load() reports as its start-up profile
    ) -> None:
        self.profile = profile
        self.worker_id, self.stages, self.model = worker_id, stages, model
        self.pool = f"{stages.lower()}-pool"
        self.transport = transport
        self.num_cached_tokens = num_cached_tokens
        self.epoch = 0
        self._reported_epoch = 0  # a restarted worker reports its new epoch at once
        self.calls: list[str] = []  # every call but poll and load, in order
        self.jobs: list[EncodeJob | PrefillJob | DecodeJob] = []
        self.aborted: list[str] = []
        self.released: list[str] = []
        self.is_paused = False  # accepts jobs, runs no step
        self.is_dead = False  # the next poll or submit raises
        self.die_after_steps: int | None = None
        self.refuse_with: Exception | None = None  # raised by every submit
        self.bad_input_reason: str | None = None  # prefills fail as invalid input, with this
        self.broken_reason: str | None = None  # prefills fail for good, with this reason
        self.poll_error: str | None = None  # with is_dead: the message the poll raises
        self.num_steps = 0
        self._hold_kind: str | None = None  # see hold()
        self.is_holding = asyncio.Event()
        self._unheld = asyncio.Event()
        self._encodes: list[EncodeJob] = []
        self._prefills: list[PrefillJob] = []
        self._decodes: list[DecodeJob] = []
        self._running: dict[str, _Running] = {}
        self._notices: list[TokenDelta] = []  # "abort" deltas, as the engine sends them
        self._embedding_cache: dict[str, int] = {}
        self._wake = asyncio.Event()
        self.paused: dict[str, int] = {}  # job id -> tokens kept
        self.resumed: list[str] = []  # the paused jobs prefills resumed, in order
        self._paused_events: list[PausedKV] = []
        self._released_events: list[PauseReleased] = []

    # ------------------------------------------------------------------ WorkerClient
    async def submit_encode(self, job: EncodeJob) -> None:
        self._accept("submit_encode", job, self._encodes)

    async def submit_prefill(self, job: PrefillJob) -> None:
        self._accept("submit_prefill", job, self._prefills)

    async def submit_decode(self, job: DecodeJob) -> None:
        self._accept("submit_decode", job, self._decodes)

    async def abort(self, request_id: str) -> None:
        self.calls.append("abort")
        self.aborted.append(request_id)
        for queue in (self._encodes, self._prefills, self._decodes):
            queue[:] = [job for job in queue if job.request_id != request_id]
        self._running.pop(request_id, None)
        self._notices.append(TokenDelta(request_id, [], "abort"))
        self._wake.set()

    async def release(self, transfer_ids: list[str]) -> None:
        self.calls.append("release")
        self.released.extend(transfer_ids)
        for transfer_id in transfer_ids:
            self.transport.arrays.pop(transfer_id, None)

    async def release_paused(self, request_ids: list[str]) -> None:
        self.calls.append("release_paused")
        for job_id in request_ids:
            if self.paused.pop(job_id, None) is not None:
                self._released_events.append(PauseReleased(job_id, "released"))

    async def load(self) -> WorkerLoad:
        return WorkerLoad(
            self.worker_id, self.epoch, self.stages, is_draining=False,
            num_encode_queued=sum(len(job.images) for job in self._encodes),
            num_waiting=len(self._prefills) + len(self._decodes),
            num_running=len(self._running), num_kv_blocks=64,
            num_kv_blocks_used=len(self._running), num_kv_blocks_cached=0,
            embedding_cache_keys=sorted(self._embedding_cache), profile=self.profile,
            num_pinned_blocks=len(self.paused), num_paused=len(self.paused),
        )  # fmt: skip

    async def poll(self, timeout_s: float) -> WorkerEvents:
        await asyncio.sleep(0)  # a real poll always yields to the event loop
        if not self._has_work():
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)
        if self.is_dead:
            raise ConnectionError(self.poll_error or f"worker {self.worker_id} died")
        if self.is_paused:
            return WorkerEvents(self.worker_id, self.epoch, load=await self.load())
        events = await self._step()
        if self._hold_kind is not None and getattr(events, self._hold_kind):
            self._hold_kind = None
            self.is_holding.set()
            await self._unheld.wait()  # the step ran; the scheduler hears of it later
        return events

    # ------------------------------------------------------------------ test controls
    def die(self) -> None:
        self.is_dead = True
        self._wake.set()

    def hold(self, kind: str) -> None:
        """Keep the next step whose events have `kind` ("encodes", "prefills", ...) from the
        scheduler until `unhold()`: its events are in flight. `is_holding` is set meanwhile."""
        self._hold_kind = kind
        self._unheld.clear()

    def unhold(self) -> None:
        self.is_holding.clear()
        self._unheld.set()

    def resume(self) -> None:
        self.is_paused = False
        self._wake.set()

    def restart(self) -> None:
        """Come back with a new epoch and nothing of what it held."""
        self.epoch += 1
        self._encodes, self._prefills, self._decodes = [], [], []
        self._running, self._embedding_cache = {}, {}
        self.resume()

    # ------------------------------------------------------------------ the engine
    def _accept(self, call: str, job, queue: list) -> None:
        if self.is_dead:
            raise ConnectionError(f"worker {self.worker_id} died")
        if self.refuse_with is not None:
            raise self.refuse_with
        self.calls.append(call)
        self.jobs.append(job)
        queue.append(job)
        self._wake.set()

    def _has_work(self) -> bool:
        busy = self._encodes or self._prefills or self._decodes or self._running or self._notices
        busy = busy or self._released_events
        is_restarted = self.epoch != self._reported_epoch
        return self.is_dead or is_restarted or (not self.is_paused and bool(busy))

    async def _step(self) -> WorkerEvents:
        tokens, self._notices = self._notices, []
        encodes, prefills, consumed, failures = [], [], [], []
        for job in self._encodes:
            embeddings = [self._encode(image, job.export) for image in job.images]
            encodes.append(EncodeDone(job.request_id, embeddings, STEP_MS, QUEUE_MS))
        advancing = list(self._running.values())  # admitted earlier: one token each this step
        for job in self._prefills:
            kv = self._prefill_kv(job, consumed, failures)
            if kv is None:
                continue
            n, max_tokens = job.num_resumed_tokens, job.sampling_params.max_tokens
            first = (kv + n) % 1000
            finish = "length" if n + 1 == max_tokens else None
            if job.resume_from is not None and self.paused.pop(job.resume_from, None):
                self.resumed.append(job.resume_from)
                self._released_events.append(PauseReleased(job.resume_from, "resumed"))
            if job.decode_here:
                tokens.append(
                    TokenDelta(
                        job.request_id, [first], finish, num_cached_tokens=self.num_cached_tokens,
                        prefill_queue_ms=QUEUE_MS, prefill_compute_ms=STEP_MS,
                    )
                )  # fmt: skip
                run = _Running(job.request_id, kv, max_tokens, n + 1, pause=job.pause is not None)
                if finish is None:
                    self._running[job.request_id] = run
                else:
                    self._end_paused(run)
                continue
            nbytes = 64 * len(job.prompt_token_ids)
            ref = (
                None if finish else self.transport.put(self.worker_id, self.epoch, "kv", kv, nbytes)
            )
            prefills.append(
                PrefillDone(
                    job.request_id, first, finish, ref, "float32", [], self.num_cached_tokens,
                    QUEUE_MS, STEP_MS,
                )
            )  # fmt: skip
        for job in self._decodes:
            kv = self._import(
                job.request_id, "decode", job.kv, job.expected_epochs, consumed, failures
            )
            if kv is not None:  # imported KV joins this very step, as in the engine
                max_tokens, num_tokens = job.sampling_params.max_tokens, job.num_resumed_tokens + 1
                run = _Running(
                    job.request_id, kv, max_tokens, num_tokens, pause=job.pause is not None
                )
                self._running[job.request_id] = run
                advancing.append(run)
        for run in advancing:
            token = (run.kv + run.num_tokens) % 1000
            queue_ms = QUEUE_MS if not run.has_decoded else None  # its first decode step
            run.has_decoded = True
            run.num_tokens += 1
            finish = "length" if run.num_tokens == run.max_tokens else None
            tokens.append(TokenDelta(run.job_id, [token], finish, 1, STEP_MS, queue_ms))
            if finish:
                del self._running[run.job_id]
                self._end_paused(run)
        self._encodes, self._prefills, self._decodes = [], [], []
        self.num_steps += 1
        self._reported_epoch = self.epoch
        if self.die_after_steps is not None and self.num_steps >= self.die_after_steps:
            self.is_dead = True
        paused, self._paused_events = self._paused_events, []
        released, self._released_events = self._released_events, []
        return WorkerEvents(
            self.worker_id, self.epoch, tokens, encodes, prefills, consumed, failures,
            step_ms=STEP_MS, load=await self.load(), num_steps=1,
            paused=paused, pauses_released=released,
        )  # fmt: skip

    def _end_paused(self, run: _Running) -> None:
        if run.pause:
            self.paused[run.job_id] = run.num_tokens
            self._paused_events.append(PausedKV(run.job_id, run.num_tokens, 1))

    def _encode(self, image: ImageInput, export: bool) -> EmbeddingInput:
        value = embedding_of(image)
        self._embedding_cache[image.image_hash] = value
        if not export:
            return EmbeddingInput(image.image_hash, None)
        ref = self.transport.put(self.worker_id, self.epoch, "emb", value, 4 * len(image.data))
        return EmbeddingInput(image.image_hash, ref)

    def _prefill_kv(self, job: PrefillJob, consumed: list, failures: list) -> int | None:
        if self.bad_input_reason is not None:
            failures.append(
                StageFailed(job.request_id, "prefill", self.bad_input_reason, False, True)
            )
            return None
        if self.broken_reason is not None:
            failures.append(StageFailed(job.request_id, "prefill", self.broken_reason, False))
            return None
        cut = len(job.prompt_token_ids) - job.num_resumed_tokens
        prompt, resumed = job.prompt_token_ids[:cut], job.prompt_token_ids[cut:]
        kv = sum(prompt)
        for image in job.images:
            if image.ref is None:
                value = self._embedding_cache.get(image.image_hash)
                if value is None:
                    reason = f"{image.image_hash} is not in the embedding cache"
                    failures.append(StageFailed(job.request_id, "prefill", reason, True))
            else:
                value = self._import(
                    job.request_id, "prefill", image.ref, job.expected_epochs, consumed, failures
                )
            if value is None:
                return None
            kv += value
        if resumed != [(kv + i) % 1000 for i in range(len(resumed))]:
            reason = f"resumed after {resumed}, not after tokens it writes"
            failures.append(StageFailed(job.request_id, "prefill", reason, False))
            return None
        return kv

    def _import(
        self,
        job_id: str,
        stage: str,
        ref: TransferRef,
        epochs: dict,
        consumed: list,
        failures: list,
    ) -> int | None:
        value = self.transport.fetch(ref)
        if epochs.get(ref.producer_id) != ref.producer_epoch:
            value, reason = None, f"{ref.transfer_id} is stale"
        else:
            reason = f"{ref.transfer_id} is missing or corrupt"
        if value is None:
            failures.append(StageFailed(job_id, stage, reason, retriable=True))
            return None
        consumed.append(TransferConsumed(job_id, ref.transfer_id, ref.producer_id, ref.nbytes, 0.5))
        return value
