"""One request in flight: its lifecycle, its trace, its output stream and where it runs."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import replace

from scheduler.cache_directory import prompt_block_hashes
from scheduler.forecast import RequestShape
from scheduler.lifecycle import Lifecycle, RequestState
from scheduler.output_stream import OutputStream
from scheduler.request import RequestSpec
from scheduler.request_class import RequestClass
from scheduler.sessions import Continuation
from scheduler.slo import SloTargets
from scheduler.trace import Trace
from scheduler.worker_registry import PendingTransfer
from workers.contract.messages import (
    DecodeJob,
    EmbeddingInput,
    EncodeJob,
    PausePlan,
    PrefillDone,
    PrefillJob,
)


class ActiveRequest:
    def __init__(
        self,
        spec: RequestSpec,
        clock: Callable[[], float],
        shape: RequestShape | None = None,  # what it costs (admission.py)
        request_class: RequestClass = RequestClass.SAND,
        targets: SloTargets | None = None,
        latest_start_ms: float = 0.0,  # queue order: deadline - predicted work (stage_queue.py)
        is_low_priority: bool = False,  # best effort, or batch priority
    ) -> None:
        self.spec = spec
        self.shape = shape
        self.request_class = request_class
        self.targets = targets
        self.latest_start_ms = latest_start_ms
        self.is_low_priority = is_low_priority
        self.trace = Trace(spec.request_id, spec.arrival_time, clock, model=spec.model)
        self.lifecycle = Lifecycle(self.trace)
        self.stream = OutputStream(spec.request_id, len(spec.prompt_token_ids))
        self.attempt = 0  # re-drives so far
        # Tokens the client had when this attempt started: its jobs resume after them (they end
        # their prompt, see lifecycle.py), so the attempt streams only tokens that come after.
        self.num_resumed_tokens = 0
        self.touched: set[str] = set()  # workers given a job of this attempt
        self.encode_worker: str | None = None
        self.embeddings: list[EmbeddingInput] = []  # from the last EncodeDone
        self.prefill_worker: str | None = None
        self.decode_worker: str | None = None  # the prefill worker itself when decode_here
        self.decode_here = False
        # Arrays produced for this request and not yet released, by transfer id.
        self.transfers: dict[str, PendingTransfer] = {}
        # Sessions (sessions.py): the paused KV this call's first attempt continues, and the
        # plan to keep this call's own KV when it ends (set when its last stage is placed).
        self.continuation: Continuation | None = None
        self.pause: PausePlan | None = None

    @property
    def request_id(self) -> str:
        return self.spec.request_id

    @property
    def job_id(self) -> str:
        """The id workers know this attempt by (see workers/contract/worker_client.py)."""
        return self.request_id if self.attempt == 0 else f"{self.request_id}~{self.attempt}"

    @property
    def state(self) -> RequestState:
        return self.lifecycle.state

    def is_current(self, attempt: int) -> bool:
        return self.attempt == attempt and not self.state.is_done

    @property
    def stage_worker(self) -> str | None:
        """The worker running the current stage."""
        return {
            RequestState.ENCODING: self.encode_worker,
            RequestState.PREFILLING: self.prefill_worker,
            RequestState.DECODING: self.decode_worker,
        }.get(self.state)

    @property
    def token_worker(self) -> str | None:
        """The worker whose TokenDeltas reach the client (None: nobody's, yet)."""
        if self.state is RequestState.DECODING or (
            self.state is RequestState.PREFILLING and self.decode_here
        ):
            return self.decode_worker
        return None

    def depends_on(self, worker_id: str) -> bool:
        """Whether losing this worker loses work or state the request still needs."""
        return self.stage_worker == worker_id or any(
            t.producer_id == worker_id for t in self.transfers.values()
        )

    def embeddings_for(
        self, worker_id: str, live_workers: Container[str]
    ) -> list[EmbeddingInput] | None:
        """What a PrefillJob on `worker_id` passes as images; None: it cannot get them.

        The encode worker itself reads its own embedding cache (ref None). Any other worker
        fetches the refs, as long as none was released yet.
        """
        if self.encode_worker not in live_workers:
            return None
        if worker_id == self.encode_worker:
            return [EmbeddingInput(e.image_hash, None) for e in self.embeddings]
        return list(self.embeddings) if self.has_embedding_refs() else None

    def has_embedding_refs(self) -> bool:
        """Whether every embedding is still held, unreleased, by its producer."""
        return bool(self.embeddings) and all(
            e.ref is not None and e.ref.transfer_id in self.transfers for e in self.embeddings
        )

    def encode_job(self, export: bool) -> EncodeJob:
        return EncodeJob(request_id=self.job_id, images=list(self.spec.images), export=export)

    def prefill_job(
        self,
        images: list[EmbeddingInput],
        expected_epochs: dict[str, int],
        priority: float,
        worker_id: str,
    ) -> PrefillJob:
        continues_here = self.continuation is not None and self.continuation.worker_id == worker_id
        return PrefillJob(
            request_id=self.job_id,
            prompt_token_ids=self.resume_prefix(),
            sampling_params=self.spec.sampling_params,
            images=images,
            decode_here=self.decode_here,
            expected_epochs=expected_epochs,
            priority=priority,
            num_resumed_tokens=self.num_resumed_tokens,
            pause=self.pause if self.decode_here else None,
            resume_from=self.continuation.resume_from if continues_here else None,
        )

    def decode_job(self, done: PrefillDone, prefill_epoch: int) -> DecodeJob:
        """Decode after `done`, importing its KV (checked against the prefill's epoch)."""
        assert done.kv is not None, "the event applier ends a prefill that handed off no KV"
        return DecodeJob(
            request_id=self.job_id,
            prompt_token_ids=self.resume_prefix(),
            sampling_params=self.spec.sampling_params,
            first_token_id=done.first_token_id,
            image_spans=list(done.image_spans),
            kv=done.kv,
            kv_dtype=done.kv_dtype,
            expected_epochs={done.kv.producer_id: prefill_epoch},
            num_resumed_tokens=self.num_resumed_tokens,
            pause=self.pause,
        )

    def resume_prefix(self) -> list[int]:
        """What this attempt's jobs prefill: the prompt, then the tokens it resumes after."""
        resumed = self.stream.token_ids[: self.num_resumed_tokens]
        return [*self.spec.prompt_token_ids, *resumed]

    def begin_attempt(self) -> None:
        """Start a re-drive: a new job id, no stage placed yet, resuming after the tokens the
        client has. Its prefill covers them too, so its shape grows by them: more prompt
        tokens, and (text only) prefix blocks to match in the workers' caches."""
        self.attempt += 1
        self.touched = set()
        self.continuation = None  # the first attempt took the paused KV (or it is gone)
        self.prefill_worker = self.decode_worker = None
        self.decode_here = False
        self.num_resumed_tokens = len(self.stream.token_ids)
        if self.shape is not None and self.num_resumed_tokens:
            self.shape = _resumed_shape(self.shape, self.resume_prefix(), self.spec.has_images)

    def forget_embeddings(self) -> list[PendingTransfer]:
        """Drop the embeddings (encode runs again); return their transfers to release."""
        self.encode_worker, self.embeddings = None, []
        return self.take_transfers("embedding")

    def take_transfers(self, kind: str | None = None) -> list[PendingTransfer]:
        """Remove and return the pending transfers of this kind (all if None)."""
        taken = [t for t in self.transfers.values() if kind is None or t.kind == kind]
        for transfer in taken:
            del self.transfers[transfer.transfer_id]
        return taken


def _resumed_shape(shape: RequestShape, prefix: list[int], has_images: bool) -> RequestShape:
    """`shape` for a prefill of `prefix` (the prompt, then resumed outputs). With images the
    prompt's block hashes stay: where its placeholders sit (the hashes' image keys) is not known
    here, and the prompt's own blocks still match."""
    cost = replace(shape.cost, num_prompt_tokens=len(prefix))
    if has_images:
        return replace(shape, cost=cost)
    hashes = prompt_block_hashes(prefix, (), None, 0, shape.block_size)
    return replace(shape, cost=cost, block_hashes=tuple(hashes))
