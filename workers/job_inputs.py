"""A job's inputs from other workers: the image embeddings of a PrefillJob, the prompt KV of a
DecodeJob, fetched from the transport and verified before the engine sees them.

    WorkerCore.submit_prefill/decode   (caller thread)
        -> InputFetcher.embeddings/kv on the worker's fetch threads: fetch, check epoch,
           checksum and KV layout, copy the KV into private memory
        -> a command holding the result (or the error) for the engine thread
    StageRunner.start_prefill/decode   (engine thread) adds the request: no transfer there, so
                                       running decodes never wait on a fetch

Thread-safe: it touches the transport (thread-safe) and nothing of the engine. Embeddings a job
takes from the worker's own embedding cache (ref None) are read on the engine thread instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.contract.messages import DecodeJob, PrefillJob, TransferConsumed, TransferRef
from workers.engine_messages import ImageEmbedding, KVLayout
from workers.transport import Transport

KV_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


class UnrunnableJobError(Exception):
    """A job this worker can never run, through no fault of the client's input (a scheduler
    bug, KV of another layout): it fails for good, but not as invalid input."""


@dataclass(frozen=True)
class FetchedEmbeddings:
    images: list[ImageEmbedding | None]  # in job order; None: from this worker's own cache
    consumed: list[TransferConsumed]  # one per fetched image, for the scheduler to release


@dataclass(frozen=True)
class FetchedKV:
    kv: np.ndarray  # [layers, 2, prompt_tokens, kv_heads, head_dim], owned and writable
    consumed: TransferConsumed


class InputFetcher:
    def __init__(
        self,
        worker_id: str,
        epoch: int,
        transport: Transport,
        kv_layout: KVLayout | None,  # None: this worker runs no language model
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.worker_id = worker_id
        self.epoch = epoch
        self.transport = transport
        self.kv_layout = kv_layout
        self.clock = clock

    def embeddings(self, job: PrefillJob) -> FetchedEmbeddings:
        images: list[ImageEmbedding | None] = []
        consumed: list[TransferConsumed] = []
        for item in job.images:
            if item.ref is None:
                images.append(None)
                continue
            rows, done = self._fetch(job.request_id, item.ref, job.expected_epochs)
            images.append(ImageEmbedding(image_hash=item.image_hash, embeddings=rows))
            consumed.append(done)
        return FetchedEmbeddings(images, consumed)

    def kv(self, job: DecodeJob) -> FetchedKV:
        kv, consumed = self._fetch(job.request_id, job.kv, job.expected_epochs)
        self._check_kv(kv, job.kv_dtype, len(job.prompt_token_ids))
        # The engine keeps the prompt's KV while the request runs (to re-import it after a
        # preemption). The fetched array is the transport's read-only memory, mapped from Ray's
        # object store without a copy: kept, it would pin the object long after
        # TransferConsumed lets the producer release it. Cost: one copy of the prompt's KV, on
        # this worker's heap for the life of the request instead of in the object store
        # (layers x 2 x tokens x kv_heads x head_dim x dtype: 128 KiB a token for Llama-3-8B in
        # bf16), plus a memcpy of it, on a fetch thread.
        return FetchedKV(_private_copy(kv), consumed)

    def _fetch(
        self, request_id: str, ref: TransferRef, expected_epochs: dict[str, int]
    ) -> tuple[np.ndarray, TransferConsumed]:
        if ref.producer_id == self.worker_id:
            expected = self.epoch
        elif ref.producer_id in expected_epochs:
            expected = expected_epochs[ref.producer_id]
        else:
            raise UnrunnableJobError(f"the job gives no expected epoch for {ref.producer_id}")
        start = self.clock()
        array = self.transport.fetch(ref, expected)
        fetch_ms = (self.clock() - start) * 1e3
        return array, TransferConsumed(
            request_id=request_id,
            transfer_id=ref.transfer_id,
            producer_id=ref.producer_id,
            nbytes=ref.nbytes,
            fetch_ms=fetch_ms,
        )

    def _check_kv(self, kv: np.ndarray, dtype: str, num_tokens: int) -> None:
        """Checked here rather than in engine.step, where a bad array would fail the batch."""
        layout = self.kv_layout
        if layout is None:
            raise UnrunnableJobError(f"{self.worker_id} has no KV cache")
        expected = (layout.num_layers, 2, num_tokens, layout.num_kv_heads, layout.head_dim)
        if kv.shape != expected or kv.dtype != KV_NUMPY_DTYPES.get(dtype):
            raise UnrunnableJobError(
                f"KV {kv.dtype}{list(kv.shape)} as {dtype!r} does not fit {list(expected)}"
            )


def _private_copy(array: np.ndarray) -> np.ndarray:
    """`array` itself if it owns its memory and may write it; else a copy in ordinary memory."""
    if array.flags.owndata and array.flags.writeable:
        return array
    return np.array(array, copy=True, order="C")
