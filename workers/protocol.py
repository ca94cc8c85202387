"""What the scheduler and the workers say to each other.

Plain dataclasses, picklable, with no torch inside. Large arrays (image embeddings, prompt KV)
never travel in these messages: they stay in a transport (Ray's object store by default) and
only a `TransferRef` crosses. A worker reports everything that happened in one engine step in
one `WorkerEvents` message: never one message per token per request.

    scheduler --submit_encode(EncodeJob)---->  worker  (E)
    scheduler --submit_prefill(PrefillJob)--->  worker  (P; decodes too when decode_here)
    scheduler --submit_decode(DecodeJob)----->  worker  (D)
    scheduler <--poll() -> WorkerEvents-------  worker  (per step: tokens, handoffs, failures)
    scheduler --release([transfer_id])------->  producer, once the consumer acknowledged
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.engine.block_hash import ImageSpan
from workers.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class TransferRef:
    """A handle to one array held by a transport, plus what the receiver checks."""

    transfer_id: str  # unique; the producer frees the array when told this id is consumed
    handle: Any  # transport-specific (for the object store: a one-element list with an ObjectRef)
    nbytes: int
    checksum: int  # crc32 of the array's bytes, computed by the producer
    producer_id: str  # worker id of the producer
    producer_epoch: int  # the producer's epoch when it made the array (bumped on restart)


@dataclass(frozen=True)
class ImageInput:
    image_hash: str  # content hash of the decoded image, computed at the ingress
    data: bytes  # the encoded image (PNG, JPEG, ...), already validated by the ingress


@dataclass(frozen=True)
class EmbeddingInput:
    image_hash: str
    ref: TransferRef | None  # None: the receiving worker holds it in its own embedding cache


@dataclass(frozen=True)
class EncodeJob:
    request_id: str
    images: list[ImageInput]


@dataclass(frozen=True)
class PrefillJob:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams  # with a concrete seed
    images: list[EmbeddingInput]  # in placeholder order
    decode_here: bool  # True: keep decoding on this worker; False: hand the KV off
    expected_epochs: dict[str, int] = field(default_factory=dict)  # producer id -> epoch


@dataclass(frozen=True)
class DecodeJob:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    first_token_id: int
    image_spans: list[ImageSpan]
    kv: TransferRef  # [layers, 2, prompt_tokens, kv_heads, head_dim], see engine/messages.py
    kv_dtype: str
    expected_epochs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodeDone:
    request_id: str
    embeddings: list[EmbeddingInput]  # refs to [image_tokens, hidden] arrays, in input order
    compute_ms: float


@dataclass(frozen=True)
class PrefillDone:
    """The first token is out and the prompt's KV waits in the transport for a decoder."""

    request_id: str
    first_token_id: int
    finish_reason: str | None  # set when the first token already ends the request
    kv: TransferRef | None  # None when finish_reason is set
    kv_dtype: str
    image_spans: list[ImageSpan]
    num_cached_tokens: int  # prompt tokens served from the prefix cache


@dataclass(frozen=True)
class TransferConsumed:
    """The receiver verified and imported an array: its producer may free it."""

    request_id: str
    transfer_id: str
    producer_id: str
    nbytes: int
    fetch_ms: float


@dataclass(frozen=True)
class TokenDelta:
    request_id: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort", or None while it continues


@dataclass(frozen=True)
class StageFailed:
    request_id: str
    stage: str  # "encode", "prefill" or "decode"
    reason: str
    retriable: bool  # True: re-drive from the last good stage (e.g. a corrupt or stale transfer)


@dataclass(frozen=True)
class WorkerLoad:
    worker_id: str
    epoch: int
    stages: str
    is_draining: bool
    num_encode_queued: int  # images waiting for the vision tower
    num_waiting: int  # requests waiting for KV blocks or a batch slot
    num_running: int
    num_kv_blocks: int
    num_kv_blocks_used: int
    num_kv_blocks_cached: int
    embedding_cache_keys: list[str] = field(default_factory=list)
    prefix_block_hashes: list[str] = field(default_factory=list)  # hex, of cached full blocks

    @property
    def num_active(self) -> int:
        return self.num_encode_queued + self.num_waiting + self.num_running


@dataclass(frozen=True)
class WorkerEvents:
    """Everything one worker did since the last poll, typically one engine step."""

    worker_id: str
    epoch: int
    tokens: list[TokenDelta] = field(default_factory=list)
    encodes: list[EncodeDone] = field(default_factory=list)
    prefills: list[PrefillDone] = field(default_factory=list)
    consumed: list[TransferConsumed] = field(default_factory=list)
    failures: list[StageFailed] = field(default_factory=list)
    step_ms: float = 0.0  # engine compute time covered by this message
    load: WorkerLoad | None = None
