"""StageRunner: turns contract jobs into engine calls and engine outputs into contract events,
through the engine interface (engine_interface.py) only.

Single-threaded and synchronous: `WorkerCore` calls it from its engine thread only. One turn is

    start_prefill / start_decode / queue_encode      (the commands that arrived; the jobs'
    / abort / release_paused                          arrays already fetched: job_inputs.py)
    turn():  engine.step()      -> TokenDelta per request, or PrefillDone + KV into the transport
                                   (decodes first, then prefill chunks under the token budget);
                                   with no request to step, only the paused KV's expiry
             encodes            -> at most `max_encode_images` images (encode_queue.py); each
                                   finished job: EncodeDone, embeddings in the transport (or
                                   only in the cache)
    take_events()               -> everything of this turn, in one EventBuffer, with what the
                                   prefix and embedding caches gained and lost, and the requests
                                   paused and pauses released (sessions)

Each job is timed from its arrival (see stage_timer.py): prefill until its first token, then
decode; engine_job.py turns its outputs into events. A job's own failure becomes a `StageFailed`
for that request only (job_failures.py); a failed engine step fails its whole batch retriably
("engine step failed").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import replace

from workers.contract.errors import InvalidRequestError
from workers.contract.images import decode_image
from workers.contract.messages import (
    DecodeJob,
    EmbeddingInput,
    EncodeDone,
    EncodeJob,
    PrefillJob,
    StageFailed,
    TokenDelta,
    WorkerLoad,
)
from workers.encode_queue import DEFAULT_MAX_ENCODE_IMAGES, EncodePiece, EncodeQueue
from workers.engine_interface import EngineInterface
from workers.engine_job import EngineJob
from workers.engine_messages import ImageEmbedding, PrefillResult, PromptKV, StepOutput
from workers.event_buffer import EventBuffer
from workers.job_failures import failures_of
from workers.job_inputs import FetchedEmbeddings, FetchedKV, InputFetcher
from workers.stage_timer import StageTimer
from workers.transport import TransferError, Transport

logger = logging.getLogger(__name__)


class StageRunner:
    def __init__(
        self,
        worker_id: str,
        epoch: int,
        engine: EngineInterface,
        transport: Transport,
        clock: Callable[[], float] = time.perf_counter,  # seconds; job arrivals use it too
        max_encode_images: int = DEFAULT_MAX_ENCODE_IMAGES,  # per turn (the profiled budget)
    ) -> None:
        if max_encode_images < 1:
            raise ValueError(f"max_encode_images must be >= 1, got {max_encode_images}")
        self.worker_id = worker_id
        self.epoch = epoch
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.fetcher = InputFetcher(
            worker_id=worker_id,
            epoch=epoch,
            transport=transport,
            kv_layout=engine.spec.kv_layout,
            clock=clock,
        )
        self.max_encode_images = max_encode_images
        self.encode_queue = EncodeQueue()
        self._jobs: dict[str, EngineJob] = {}  # by request id, while the engine has it
        self._events = EventBuffer()

    # ----------------------------------------------------------------- commands
    # `arrival`: when the job reached the worker (clock seconds); None: now.
    def queue_encode(self, job: EncodeJob, arrival: float | None = None) -> None:
        self.encode_queue.append(job, self.clock() if arrival is None else arrival)

    # `inputs`: the job's arrays, fetched and verified off the engine thread (see job_inputs.py),
    # or the error that fetching raised; None: fetch them here.
    def start_prefill(
        self,
        job: PrefillJob,
        arrival: float | None = None,
        inputs: Future[FetchedEmbeddings] | None = None,
    ) -> None:
        arrival = self.clock() if arrival is None else arrival
        with self._failures_of(job.request_id, "prefill"):
            fetched = inputs.result() if inputs is not None else self.fetcher.embeddings(job)
            images = []
            for item, image in zip(job.images, fetched.images, strict=True):
                if image is None:  # the job reads this worker's own embedding cache
                    image = self.engine.cached_embedding(item.image_hash)
                    if image is None:
                        raise TransferError(f"image {item.image_hash} is not cached here")
                images.append(image)
            self.engine.add_request(
                request_id=job.request_id,
                prompt_token_ids=job.prompt_token_ids,
                sampling_params=job.sampling_params,
                images=images,
                export_kv=not job.decode_here,
                priority=job.priority,
                num_resumed_tokens=job.num_resumed_tokens,
                # An exported prompt ends on its decoder: the DecodeJob's plan pins it there.
                pause=job.pause if job.decode_here else None,
                resume_from=job.resume_from,
            )
            for image in fetched.images:  # a later turn with the same image skips the transfer
                if image is not None:
                    self.engine.cache_embedding(replace(image, embeddings=image.embeddings.copy()))
            timer = StageTimer(
                arrival=arrival, fetch_ms=sum(done.fetch_ms for done in fetched.consumed)
            )
            request = self.engine.get_request(job.request_id)
            self._jobs[job.request_id] = EngineJob(
                stage="prefill", request=request, is_export=not job.decode_here, timer=timer
            )
            self._events.consumed += fetched.consumed

    def start_decode(
        self, job: DecodeJob, arrival: float | None = None, inputs: Future[FetchedKV] | None = None
    ) -> None:
        arrival = self.clock() if arrival is None else arrival
        with self._failures_of(job.request_id, "decode"):
            fetched = inputs.result() if inputs is not None else self.fetcher.kv(job)
            prefill = PrefillResult(
                request_id=job.request_id,
                prompt_token_ids=job.prompt_token_ids,
                first_token_id=job.first_token_id,
                kv=PromptKV(kv=fetched.kv, dtype=job.kv_dtype),
                image_spans=job.image_spans,
                num_resumed_tokens=job.num_resumed_tokens,
            )
            self.engine.add_prefilled(prefill, job.sampling_params, pause=job.pause)
            request = self.engine.get_request(job.request_id)
            timer = StageTimer(arrival=arrival, fetch_ms=fetched.consumed.fetch_ms)
            self._jobs[job.request_id] = EngineJob(
                stage="decode", request=request, is_export=False, timer=timer, is_decoding=True
            )
            self._events.consumed.append(fetched.consumed)

    def abort(self, request_id: str) -> None:
        self.encode_queue.abort(request_id)
        self.engine.abort(request_id)  # its "abort" TokenDelta comes out of the next step

    def release_paused(self, request_id: str) -> None:
        self.engine.release_paused(request_id)  # reported in this turn's pauses_released

    # ----------------------------------------------------------------- one turn
    def has_work(self) -> bool:
        return bool(self.encode_queue) or self.engine.has_unfinished_requests()

    def turn(self) -> None:
        """One engine step (decodes first, so images do not stretch TPOT), then the encodes
        the image budget allows."""
        if self.engine.has_unfinished_requests():
            self._step()  # it expires paused KV too
        else:
            self.engine.expire_paused()
        for piece in self.encode_queue.take(self.max_encode_images):
            self._encode(piece)

    def take_events(self) -> EventBuffer:
        """This turn's events (the commands' too), with the caches' changes since the last
        take: O(changes), never a listing of the caches."""
        events, self._events = self._events, EventBuffer()
        events.embeddings.merge(self.engine.take_embedding_cache_delta())
        events.prefix_blocks.merge(self.engine.take_prefix_cache_delta().mapped(bytes.hex))
        events.paused, events.pauses_released = self.engine.take_pause_events()
        return events

    def measure_load(self) -> WorkerLoad:
        """The load after a turn, with cache sizes but not their entries: it runs every turn
        and rides every poll (the entries: WorkerCore.load)."""
        stats = self.engine.stats()
        return WorkerLoad(
            worker_id=self.worker_id,
            epoch=self.epoch,
            stages=self.engine.config.stages,
            is_draining=False,
            num_encode_queued=self.encode_queue.num_images_queued,
            num_waiting=stats.num_waiting,
            num_running=stats.num_running,
            num_kv_blocks=stats.num_kv_blocks,
            num_kv_blocks_used=stats.num_used_blocks,
            num_kv_blocks_cached=stats.num_cached_blocks,
            num_embedding_cache_entries=stats.num_embedding_cache_entries,
            num_prefix_cache_blocks=stats.num_prefix_cache_blocks,
            num_pinned_blocks=stats.num_pinned_blocks,
            num_paused=stats.num_paused,
        )

    def _step(self) -> None:
        for job in self._jobs.values():
            job.note_step_start()
        start = self.clock()
        try:
            outputs = self.engine.step()
        except Exception:  # a device or engine bug: fail this batch, keep the worker
            logger.exception("engine step failed on %s", self.worker_id)
            for request_id, job in self._jobs.items():
                self.engine.abort(request_id)
                failure = StageFailed(
                    request_id=request_id,
                    stage=job.stage,
                    reason="engine step failed",
                    retriable=True,
                )
                self._events.failures.append(failure)
            self._jobs.clear()
            return
        end = self.clock()
        step_ms = (end - start) * 1e3
        self._events.step_ms += step_ms
        self._events.num_steps += 1
        for job in self._jobs.values():
            if job.has_prefilled_in_step():
                job.timer.count_step(start, step_ms)
        for out in outputs:
            job = self._jobs.get(out.request_id)
            if job is None:
                continue  # failed earlier: drop the engine's late abort notice
            if out.finish_reason is not None or out.prefill is not None:
                del self._jobs[out.request_id]
            if out.finish_reason == "abort":
                abort = TokenDelta(request_id=out.request_id, token_ids=[], finish_reason="abort")
                self._events.add_tokens(abort)
            elif job.is_decoding:
                job.timer.count_step(start, step_ms)
                self._events.add_tokens(job.decode_delta(out, step_ms))
            elif job.is_export:
                self._hand_off(out, job)
            else:  # decode_here: the first token; decoding starts now, on this worker
                self._events.add_tokens(job.first_token_delta(out))
                job.stage, job.timer, job.is_decoding = "decode", StageTimer(arrival=end), True

    def _hand_off(self, out: StepOutput, job: EngineJob) -> None:
        """The first token is out: leave the prompt's KV in the transport for a decoder."""
        with self._failures_of(out.request_id, "prefill"):
            kv = out.prefill.kv if out.prefill else None  # None: the first token finished it
            ref = self.transport.put(kv.kv, self.worker_id, self.epoch) if kv else None
            kv_dtype = kv.dtype if kv else self.engine.config.dtype
            self._events.prefills.append(job.prefill_done(out, ref, kv_dtype))

    def _encode(self, piece: EncodePiece) -> None:
        """Encode one piece of a job; the job's last piece reports the whole job."""
        progress, job = piece.progress, piece.progress.job
        is_failed = True
        with self._failures_of(job.request_id, "encode"):
            start = self.clock()
            embeddings = self.engine.encode([decode_image(image.data) for image in piece.images])
            compute_ms = (self.clock() - start) * 1e3
            for image, embedding in zip(piece.images, embeddings, strict=True):
                if image.image_hash != embedding.image_hash:
                    raise InvalidRequestError(
                        f"image hash {image.image_hash} is not the decoded pixels' "
                        f"{embedding.image_hash} (see workers/contract/images.py)"
                    )
            progress.record(start, embeddings, compute_ms)
            if progress.is_done:
                refs = self._embedding_refs(job, progress.embeddings)
                done = EncodeDone(
                    request_id=job.request_id,
                    embeddings=refs,
                    compute_ms=progress.compute_ms,
                    queue_ms=progress.queue_ms,
                )
                self._events.encodes.append(done)
            is_failed = False
        if is_failed or progress.is_done:  # a failed piece fails the whole job
            self.encode_queue.remove(progress)

    def _embedding_refs(
        self, job: EncodeJob, embeddings: list[ImageEmbedding]
    ) -> list[EmbeddingInput]:
        cached = set(self.engine.embedding_cache_keys())
        if not job.export and all(e.image_hash in cached for e in embeddings):
            return [EmbeddingInput(image_hash=e.image_hash, ref=None) for e in embeddings]
        # Exported also when the cache cannot keep them all until prefill.
        arrays = [embedding.embeddings for embedding in embeddings]
        refs = self.transport.put_all(arrays, self.worker_id, self.epoch)
        return [
            EmbeddingInput(image_hash=embedding.image_hash, ref=ref)
            for embedding, ref in zip(embeddings, refs, strict=True)
        ]

    # ----------------------------------------------------------------- failures
    def _failures_of(self, request_id: str, stage: str) -> AbstractContextManager[None]:
        """One job's error fails that job only (see job_failures.py)."""
        return failures_of(self._events.failures, self.worker_id, request_id, stage)
