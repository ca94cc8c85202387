"""StageRunner: turns protocol jobs into engine calls and engine outputs into protocol events.

Single-threaded and synchronous: `WorkerCore` calls it from its engine thread only. One turn is

    start_prefill / start_decode / queue_encode / abort   (the commands that arrived)
    turn():  engine.step()      -> TokenDelta per request, or PrefillDone + KV into the transport
             one encode job     -> EncodeDone with embeddings in the transport
    take_events()               -> everything of this turn, in one EventBuffer

A job's own failure becomes a `StageFailed` for that request: retriable for a transfer that is
missing, stale or corrupt (re-drive from the last good stage), not for bad input.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from workers.engine.engine import Engine
from workers.engine.errors import InvalidRequestError
from workers.engine.image_processor import decode_image
from workers.engine.messages import ImageEmbedding, PrefillResult, PromptKV, StepOutput
from workers.engine.request import Request
from workers.protocol import (
    DecodeJob,
    EmbeddingInput,
    EncodeDone,
    EncodeJob,
    PrefillDone,
    PrefillJob,
    StageFailed,
    TokenDelta,
    TransferConsumed,
    TransferRef,
    WorkerEvents,
    WorkerLoad,
)
from workers.transport import TransferError, Transport

logger = logging.getLogger(__name__)
KV_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


@dataclass
class EventBuffer:
    """Events not yet polled. Token deltas are merged per request, in arrival order."""

    tokens: dict[str, TokenDelta] = field(default_factory=dict)
    encodes: list[EncodeDone] = field(default_factory=list)
    prefills: list[PrefillDone] = field(default_factory=list)
    consumed: list[TransferConsumed] = field(default_factory=list)
    failures: list[StageFailed] = field(default_factory=list)
    step_ms: float = 0.0  # engine.step time only; encode time is in each EncodeDone

    def add_tokens(self, delta: TokenDelta) -> None:
        earlier = self.tokens.get(delta.request_id)
        if earlier is not None:
            delta = replace(delta, token_ids=earlier.token_ids + delta.token_ids)
        self.tokens[delta.request_id] = delta

    def merge(self, later: EventBuffer) -> None:
        for delta in later.tokens.values():
            self.add_tokens(delta)
        self.encodes += later.encodes
        self.prefills += later.prefills
        self.consumed += later.consumed
        self.failures += later.failures
        self.step_ms += later.step_ms

    def is_empty(self) -> bool:
        return not (self.tokens or self.encodes or self.prefills or self.consumed or self.failures)

    def to_message(self, worker_id: str, epoch: int, load: WorkerLoad) -> WorkerEvents:
        return WorkerEvents(
            worker_id, epoch, list(self.tokens.values()), self.encodes, self.prefills,
            self.consumed, self.failures, self.step_ms, load,
        )  # fmt: skip


class StageRunner:
    def __init__(self, worker_id: str, epoch: int, engine: Engine, transport: Transport) -> None:
        self.worker_id = worker_id
        self.epoch = epoch
        self.engine = engine
        self.transport = transport
        self.encode_queue: deque[EncodeJob] = deque()
        self._stage_of: dict[str, str] = {}  # request in the engine -> "prefill" | "decode"
        self._exports: dict[str, Request] = {}  # requests whose KV leaves after the first token
        self._events = EventBuffer()

    # ----------------------------------------------------------------- commands
    def queue_encode(self, job: EncodeJob) -> None:
        self.encode_queue.append(job)

    def start_prefill(self, job: PrefillJob) -> None:
        with self._failures_of(job.request_id, "prefill"):
            images, fetched, consumed = [], [], []
            for item in job.images:
                if item.ref is None:
                    cached = self.engine.embedding_cache.get(item.image_hash)
                    if cached is None:
                        raise TransferError(f"image {item.image_hash} is not cached here")
                    images.append(cached)
                    continue
                rows, done = self._fetch(job.request_id, item.ref, job.expected_epochs)
                images.append(ImageEmbedding(item.image_hash, rows))
                fetched.append(images[-1])
                consumed.append(done)
            self.engine.add_request(
                job.request_id, job.prompt_token_ids, job.sampling_params, images,
                export_kv=not job.decode_here,
            )  # fmt: skip
            for image in fetched:  # a later turn with the same image can skip the transfer
                self.engine.embedding_cache.put(replace(image, embeddings=image.embeddings.copy()))
            self._stage_of[job.request_id] = "prefill"
            if not job.decode_here:
                self._exports[job.request_id] = self.engine.get_request(job.request_id)
            self._events.consumed += consumed

    def start_decode(self, job: DecodeJob) -> None:
        with self._failures_of(job.request_id, "decode"):
            kv, consumed = self._fetch(job.request_id, job.kv, job.expected_epochs)
            self._check_kv(kv, job.kv_dtype, len(job.prompt_token_ids))
            prefill = PrefillResult(
                job.request_id, job.prompt_token_ids, job.first_token_id,
                PromptKV(kv, job.kv_dtype), job.image_spans,
            )  # fmt: skip
            self.engine.add_prefilled(prefill, job.sampling_params)
            self._stage_of[job.request_id] = "decode"
            self._events.consumed.append(consumed)

    def abort(self, request_id: str) -> None:
        for job in [job for job in self.encode_queue if job.request_id == request_id]:
            self.encode_queue.remove(job)
        self._exports.pop(request_id, None)
        self.engine.abort(request_id)  # its "abort" TokenDelta comes out of the next step

    # ----------------------------------------------------------------- one turn
    def has_work(self) -> bool:
        return bool(self.encode_queue) or self.engine.has_unfinished_requests()

    def turn(self) -> None:
        """One engine step (decodes first, so images do not stretch TPOT), then one encode."""
        if self.engine.has_unfinished_requests():
            self._step()
        if self.encode_queue:
            self._encode(self.encode_queue.popleft())

    def take_events(self) -> EventBuffer:
        events, self._events = self._events, EventBuffer()
        return events

    @property
    def num_encode_images_queued(self) -> int:
        return sum(len(job.images) for job in self.encode_queue)

    def measure_load(self) -> WorkerLoad:
        stats, engine = self.engine.stats(), self.engine
        hashes = engine.block_pool.cached_hashes() if engine.batcher else []
        return WorkerLoad(
            worker_id=self.worker_id, epoch=self.epoch, stages=engine.config.stages,
            is_draining=False, num_encode_queued=self.num_encode_images_queued,
            num_waiting=stats.num_waiting, num_running=stats.num_running,
            num_kv_blocks=stats.num_kv_blocks, num_kv_blocks_used=stats.num_used_blocks,
            num_kv_blocks_cached=stats.num_cached_blocks,
            embedding_cache_keys=engine.embedding_cache.keys(),
            prefix_block_hashes=[block_hash.hex() for block_hash in hashes],
        )  # fmt: skip

    def _step(self) -> None:
        start = time.perf_counter()
        try:
            outputs = self.engine.step()
        except Exception as e:  # a device or engine bug: fail this batch, keep the worker
            logger.exception("engine step failed on %s", self.worker_id)
            for request_id, stage in self._stage_of.items():
                self.engine.abort(request_id)
                self._fail(request_id, stage, f"engine step failed: {e!r}", retriable=True)
            self._stage_of.clear()
            self._exports.clear()
            return
        self._events.step_ms += (time.perf_counter() - start) * 1e3
        for out in outputs:
            if out.request_id not in self._stage_of:
                continue  # failed earlier: drop the engine's late abort notice
            if out.finish_reason is not None or out.prefill is not None:
                del self._stage_of[out.request_id]
            request = self._exports.pop(out.request_id, None)
            if request is None or out.finish_reason == "abort":
                self._events.add_tokens(
                    TokenDelta(out.request_id, out.new_token_ids, out.finish_reason)
                )
            else:
                self._hand_off(out, request)

    def _hand_off(self, out: StepOutput, request: Request) -> None:
        """The first token is out: leave the prompt's KV in the transport for a decoder."""
        with self._failures_of(out.request_id, "prefill"):
            kv = out.prefill.kv if out.prefill else None  # None: the first token finished it
            ref = self.transport.put(kv.kv, self.worker_id, self.epoch) if kv else None
            self._events.prefills.append(
                PrefillDone(
                    request_id=out.request_id, first_token_id=out.new_token_ids[0],
                    finish_reason=out.finish_reason, kv=ref,
                    kv_dtype=kv.dtype if kv else self.engine.config.dtype,
                    image_spans=list(request.image_spans),
                    num_cached_tokens=request.num_cached_tokens,
                )
            )  # fmt: skip

    def _encode(self, job: EncodeJob) -> None:
        refs: list[EmbeddingInput] = []
        with self._failures_of(job.request_id, "encode"):
            start = time.perf_counter()
            embeddings = self.engine.encode([decode_image(image.data) for image in job.images])
            compute_ms = (time.perf_counter() - start) * 1e3
            for image, embedding in zip(job.images, embeddings, strict=True):
                if image.image_hash != embedding.image_hash:
                    raise InvalidRequestError(
                        f"image hash {image.image_hash} is not the decoded pixels' "
                        f"{embedding.image_hash} (see image_processor.image_hash)"
                    )
            try:
                for embedding in embeddings:
                    ref = self.transport.put(embedding.embeddings, self.worker_id, self.epoch)
                    refs.append(EmbeddingInput(embedding.image_hash, ref))
            except TransferError:
                for item in refs:
                    self.transport.release(item.ref.transfer_id)
                raise
            self._events.encodes.append(EncodeDone(job.request_id, refs, compute_ms))

    # ----------------------------------------------------------------- checks
    def _fetch(
        self, request_id: str, ref: TransferRef, expected_epochs: dict[str, int]
    ) -> tuple[np.ndarray, TransferConsumed]:
        if ref.producer_id == self.worker_id:
            expected = self.epoch
        elif ref.producer_id in expected_epochs:
            expected = expected_epochs[ref.producer_id]
        else:
            raise InvalidRequestError(f"the job gives no expected epoch for {ref.producer_id}")
        start = time.perf_counter()
        array = self.transport.fetch(ref, expected)
        fetch_ms = (time.perf_counter() - start) * 1e3
        return array, TransferConsumed(
            request_id, ref.transfer_id, ref.producer_id, ref.nbytes, fetch_ms
        )

    def _check_kv(self, kv: np.ndarray, dtype: str, num_tokens: int) -> None:
        """Checked here rather than in engine.step, where a bad array would fail the batch."""
        layers, _, _, _, heads, head_dim = self.engine.kv_cache.tensor.shape
        expected = (layers, 2, num_tokens, heads, head_dim)
        if kv.shape != expected or kv.dtype != KV_NUMPY_DTYPES.get(dtype):
            raise InvalidRequestError(
                f"KV {kv.dtype}{list(kv.shape)} as {dtype!r} does not fit {list(expected)}"
            )

    def _fail(self, request_id: str, stage: str, reason: str, retriable: bool) -> None:
        self._events.failures.append(StageFailed(request_id, stage, reason, retriable))

    @contextmanager
    def _failures_of(self, request_id: str, stage: str) -> Iterator[None]:
        """One job's error fails that job only: a transfer error retriably, bad input not."""
        try:
            yield
        except TransferError as e:
            self._fail(request_id, stage, str(e), retriable=True)
        except InvalidRequestError as e:
            self._fail(request_id, stage, str(e), retriable=False)
        except Exception as e:
            logger.exception("%s of %s failed on %s", stage, request_id, self.worker_id)
            self._fail(request_id, stage, f"internal error: {e!r}", retriable=False)
