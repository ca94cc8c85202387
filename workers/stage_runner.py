"""StageRunner: turns protocol jobs into engine calls and engine outputs into protocol events.

Single-threaded and synchronous: `WorkerCore` calls it from its engine thread only. One turn is

    start_prefill / start_decode / queue_encode / abort   (the commands that arrived; the jobs'
                                                           arrays already fetched: job_inputs.py)
    turn():  engine.step()      -> TokenDelta per request, or PrefillDone + KV into the transport
             one encode job     -> EncodeDone, embeddings in the transport (or only in the cache)
    take_events()               -> everything of this turn, in one EventBuffer

Each job is timed from its arrival (see stage_timer.py): prefill until its first token, then
decode. A job's own failure becomes a `StageFailed` for that request: retriable for a transfer
that is missing, stale or corrupt (re-drive from the last good stage), invalid input for input
the engine refuses, and neither for a job no worker could run. A reason is one short line and
never an exception's text ("internal error", "engine step failed"): the exception is logged.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace

from workers.engine.engine import Engine
from workers.engine.errors import InvalidRequestError
from workers.engine.image_processor import decode_image
from workers.engine.messages import ImageEmbedding, PrefillResult, PromptKV, StepOutput
from workers.event_buffer import EventBuffer
from workers.job_inputs import (
    FetchedEmbeddings,
    FetchedKV,
    InputFetcher,
    KVLayout,
    UnrunnableJobError,
)
from workers.protocol import (
    DecodeJob,
    EmbeddingInput,
    EncodeDone,
    EncodeJob,
    PrefillDone,
    PrefillJob,
    StageFailed,
    TokenDelta,
    WorkerLoad,
)
from workers.stage_timer import EngineJob, StageTimer
from workers.transport import TransferError, Transport

logger = logging.getLogger(__name__)


class StageRunner:
    def __init__(
        self,
        worker_id: str,
        epoch: int,
        engine: Engine,
        transport: Transport,
        clock: Callable[[], float] = time.perf_counter,  # seconds; job arrivals use it too
    ) -> None:
        self.worker_id = worker_id
        self.epoch = epoch
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.fetcher = InputFetcher(worker_id, epoch, transport, kv_layout(engine), clock)
        self.encode_queue: deque[tuple[EncodeJob, float]] = deque()  # with their arrival
        self._jobs: dict[str, EngineJob] = {}  # by request id, while the engine has it
        self._events = EventBuffer()

    # ----------------------------------------------------------------- commands
    # `arrival`: when the job reached the worker (clock seconds); None: now.
    def queue_encode(self, job: EncodeJob, arrival: float | None = None) -> None:
        self.encode_queue.append((job, self.clock() if arrival is None else arrival))

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
                    image = self.engine.embedding_cache.get(item.image_hash)
                    if image is None:
                        raise TransferError(f"image {item.image_hash} is not cached here")
                images.append(image)
            self.engine.add_request(
                job.request_id, job.prompt_token_ids, job.sampling_params, images,
                export_kv=not job.decode_here,
            )  # fmt: skip
            for image in fetched.images:  # a later turn with the same image skips the transfer
                if image is not None:
                    self.engine.embedding_cache.put(
                        replace(image, embeddings=image.embeddings.copy())
                    )
            timer = StageTimer(arrival, fetch_ms=sum(done.fetch_ms for done in fetched.consumed))
            request = self.engine.get_request(job.request_id)
            self._jobs[job.request_id] = EngineJob("prefill", request, not job.decode_here, timer)
            self._events.consumed += fetched.consumed

    def start_decode(
        self, job: DecodeJob, arrival: float | None = None, inputs: Future[FetchedKV] | None = None
    ) -> None:
        arrival = self.clock() if arrival is None else arrival
        with self._failures_of(job.request_id, "decode"):
            fetched = inputs.result() if inputs is not None else self.fetcher.kv(job)
            prefill = PrefillResult(
                job.request_id, job.prompt_token_ids, job.first_token_id,
                PromptKV(fetched.kv, job.kv_dtype), job.image_spans,
            )  # fmt: skip
            self.engine.add_prefilled(prefill, job.sampling_params)
            request = self.engine.get_request(job.request_id)
            timer = StageTimer(arrival, fetch_ms=fetched.consumed.fetch_ms)
            self._jobs[job.request_id] = EngineJob("decode", request, False, timer, True)
            self._events.consumed.append(fetched.consumed)

    def abort(self, request_id: str) -> None:
        self.encode_queue = deque(q for q in self.encode_queue if q[0].request_id != request_id)
        self.engine.abort(request_id)  # its "abort" TokenDelta comes out of the next step

    # ----------------------------------------------------------------- one turn
    def has_work(self) -> bool:
        return bool(self.encode_queue) or self.engine.has_unfinished_requests()

    def turn(self) -> None:
        """One engine step (decodes first, so images do not stretch TPOT), then one encode."""
        if self.engine.has_unfinished_requests():
            self._step()
        if self.encode_queue:
            self._encode(*self.encode_queue.popleft())

    def take_events(self) -> EventBuffer:
        events, self._events = self._events, EventBuffer()
        return events

    @property
    def num_encode_images_queued(self) -> int:
        return sum(len(job.images) for job, _ in self.encode_queue)

    def measure_load(self) -> WorkerLoad:
        """The load after a turn, with cache sizes but not their entries: it runs every turn
        and rides every poll (the entries: WorkerCore.load)."""
        stats, engine = self.engine.stats(), self.engine
        # BlockPool counts its hashed blocks only by listing them: a copy of the dict's keys,
        # no hashing or hexing (about 0.4 ms for 50k blocks).
        num_prefix_blocks = engine.block_pool.num_hashed_blocks if engine.batcher else 0
        return WorkerLoad(
            worker_id=self.worker_id, epoch=self.epoch, stages=engine.config.stages,
            is_draining=False, num_encode_queued=self.num_encode_images_queued,
            num_waiting=stats.num_waiting, num_running=stats.num_running,
            num_kv_blocks=stats.num_kv_blocks, num_kv_blocks_used=stats.num_used_blocks,
            num_kv_blocks_cached=stats.num_cached_blocks,
            num_embedding_cache_entries=len(engine.embedding_cache.keys()),
            num_prefix_cache_blocks=num_prefix_blocks,
        )  # fmt: skip

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
                self._fail(request_id, job.stage, "engine step failed", retriable=True)
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
                self._events.add_tokens(TokenDelta(out.request_id, [], "abort"))
            elif job.is_decoding:
                job.timer.count_step(start, step_ms)
                self._events.add_tokens(
                    TokenDelta(
                        out.request_id, out.new_token_ids, out.finish_reason, 1, step_ms,
                        job.timer.queue_ms if job.timer.num_steps == 1 else None,
                    )
                )  # fmt: skip
            elif job.is_export:
                self._hand_off(out, job)
            else:  # decode_here: the first token; decoding starts now, on this worker
                self._events.add_tokens(
                    TokenDelta(
                        out.request_id, out.new_token_ids, out.finish_reason,
                        num_cached_tokens=job.request.num_cached_tokens,
                        prefill_queue_ms=job.timer.queue_ms,
                        prefill_compute_ms=job.timer.compute_ms,
                    )
                )  # fmt: skip
                job.stage, job.timer, job.is_decoding = "decode", StageTimer(end), True

    def _hand_off(self, out: StepOutput, job: EngineJob) -> None:
        """The first token is out: leave the prompt's KV in the transport for a decoder."""
        with self._failures_of(out.request_id, "prefill"):
            kv = out.prefill.kv if out.prefill else None  # None: the first token finished it
            ref = self.transport.put(kv.kv, self.worker_id, self.epoch) if kv else None
            self._events.prefills.append(
                PrefillDone(
                    request_id=out.request_id, first_token_id=out.new_token_ids[0],
                    finish_reason=out.finish_reason, kv=ref,
                    kv_dtype=kv.dtype if kv else self.engine.config.dtype,
                    image_spans=list(job.request.image_spans),
                    num_cached_tokens=job.request.num_cached_tokens,
                    queue_ms=job.timer.queue_ms, compute_ms=job.timer.compute_ms,
                )
            )  # fmt: skip

    def _encode(self, job: EncodeJob, arrival: float) -> None:
        refs: list[EmbeddingInput] = []
        with self._failures_of(job.request_id, "encode"):
            start = self.clock()
            embeddings = self.engine.encode([decode_image(image.data) for image in job.images])
            compute_ms = (self.clock() - start) * 1e3
            for image, embedding in zip(job.images, embeddings, strict=True):
                if image.image_hash != embedding.image_hash:
                    raise InvalidRequestError(
                        f"image hash {image.image_hash} is not the decoded pixels' "
                        f"{embedding.image_hash} (see image_processor.image_hash)"
                    )
            cached = set(self.engine.embedding_cache.keys())
            if not job.export and all(e.image_hash in cached for e in embeddings):
                refs = [EmbeddingInput(embedding.image_hash, None) for embedding in embeddings]
            else:  # exported, also when the cache is too small to keep them all until prefill
                refs = self._export(embeddings)
            queue_ms = (start - arrival) * 1e3
            self._events.encodes.append(EncodeDone(job.request_id, refs, compute_ms, queue_ms))

    def _export(self, embeddings: list[ImageEmbedding]) -> list[EmbeddingInput]:
        refs: list[EmbeddingInput] = []
        try:
            for embedding in embeddings:
                ref = self.transport.put(embedding.embeddings, self.worker_id, self.epoch)
                refs.append(EmbeddingInput(embedding.image_hash, ref))
        except TransferError:
            for item in refs:
                self.transport.release(item.ref.transfer_id)
            raise
        return refs

    # ----------------------------------------------------------------- failures
    def _fail(
        self, request_id: str, stage: str, reason: str, retriable: bool, is_invalid_input=False
    ) -> None:
        failure = StageFailed(request_id, stage, reason, retriable, is_invalid_input)
        self._events.failures.append(failure)

    @contextmanager
    def _failures_of(self, request_id: str, stage: str) -> Iterator[None]:
        """One job's error fails that job only: a transfer error retriably, bad input not."""
        try:
            yield
        except TransferError as e:
            self._fail(request_id, stage, str(e), retriable=True)
        except InvalidRequestError as e:  # its subclasses too: bad images, too-long prompts
            self._fail(request_id, stage, str(e), retriable=False, is_invalid_input=True)
        except UnrunnableJobError as e:
            self._fail(request_id, stage, str(e), retriable=False)
        except Exception:  # its text may hold paths and addresses: the log only
            logger.exception("%s of %s failed on %s", stage, request_id, self.worker_id)
            self._fail(request_id, stage, "internal error", retriable=False)


def kv_layout(engine: Engine) -> KVLayout | None:
    if engine.batcher is None:
        return None
    layers, _, _, _, heads, head_dim = engine.kv_cache.tensor.shape
    return KVLayout(layers, heads, head_dim)
