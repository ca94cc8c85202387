"""What the scheduler and the workers say to each other.

Plain dataclasses, picklable, with no torch inside. Large arrays (image embeddings, prompt KV)
never travel in these messages: they stay in a transport (Ray's object store by default) and
only a `TransferRef` crosses. A worker reports what it did in `WorkerEvents` messages, never
one message per token per request.

    scheduler --submit_encode(EncodeJob)---->  worker  (E)
    scheduler --submit_prefill(PrefillJob)--->  worker  (P; decodes too when decode_here)
    scheduler --submit_decode(DecodeJob)----->  worker  (D)
    scheduler <--poll() -> WorkerEvents-------  worker  (tokens, handoffs, failures, timings)
    scheduler --release([transfer_id])------->  producer, once the consumer acknowledged
    scheduler --release_paused([request_id])->  worker holding a paused request's KV

The rules both sides keep (job ids name attempts, one poll covers everything since the previous
one, who reports the first token, transfers, errors) are in worker_client.py.

Times are the worker's own, in ms on its monotonic clock: `queue_ms` from the job's arrival at
the worker to the first engine step that computes it (encode: to the encode's start), less the
time spent fetching its inputs (reported apart, as `TransferConsumed.fetch_ms`); `compute_ms`
the summed time of the steps that computed it. A step computes the whole batch, so each request
in it is charged the full step time (see workers/stage_timer.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.contract.block_hash import ImageSpan
from workers.contract.cost_profile import WorkerProfile
from workers.contract.sampling_params import SamplingParams


@dataclass(frozen=True)
class PausePlan:
    """Keep a request's KV on the worker that ends it, pinned, for a call that continues it
    (sessions: the scheduler decides pin or not by cost, scheduler/pause_policy.py)."""

    ttl_s: float  # release the KV this long after the request ends, if nobody resumed it
    expected_pause_s: float  # until the continuation is expected: under memory pressure the
    # paused request expected back last is released first


@dataclass(frozen=True)
class PausedKV:
    """A request ended paused: its KV stays on the reporting worker."""

    request_id: str
    num_tokens: int  # tokens whose KV is kept (the prompt and the outputs but the last)
    num_blocks: int


@dataclass(frozen=True)
class PauseReleased:
    """A paused request's KV is gone from the reporting worker."""

    request_id: str
    reason: str  # "resumed", "expired", "evicted" (memory pressure), "released" (asked)


@dataclass(frozen=True)
class TransferRef:
    """A handle to one array held by a transport, plus what the receiver checks."""

    transfer_id: str  # unique; the producer frees the array when told this id is consumed
    handle: Any  # transport-specific (for the object store: a one-element list with an ObjectRef)
    nbytes: int
    checksum: int  # xxh3-64 of the array's bytes, computed by the producer
    producer_id: str  # worker id of the producer
    producer_epoch: int  # the producer's epoch when it made the array (bumped on restart)


@dataclass(frozen=True)
class ImageInput:
    image_hash: str  # content hash of the decoded image, computed at the ingress
    data: bytes  # the encoded image (PNG, JPEG, ...), already validated by the ingress
    num_pixels: int = 0  # width * height of the decoded image (0: unknown), for cost estimates


@dataclass(frozen=True)
class EmbeddingInput:
    image_hash: str
    ref: TransferRef | None  # None: the receiving worker holds it in its own embedding cache


@dataclass(frozen=True)
class EncodeJob:
    request_id: str
    images: list[ImageInput]
    # False: prefill will run on this worker, so keep the embeddings in its embedding cache only
    # and return refs of None (no transfer), unless the cache cannot hold them all: then they
    # are exported anyway. True: put them in the transport for another worker.
    export: bool = True


@dataclass(frozen=True)
class PrefillJob:
    request_id: str
    # The prompt, then (a resumed re-drive) the output tokens the client already has: the last
    # `num_resumed_tokens` of these are outputs. Their KV is computed like the prompt's, and the
    # engine counts them as already generated: the first token sampled is output number
    # `num_resumed_tokens` (0-based), at the same position and seed as in an uninterrupted run,
    # and max_tokens and stop conditions count from the original prompt's end.
    prompt_token_ids: list[int]
    sampling_params: SamplingParams  # with a concrete seed
    images: list[EmbeddingInput]  # in placeholder order
    decode_here: bool  # True: keep decoding on this worker; False: hand the KV off
    expected_epochs: dict[str, int] = field(default_factory=dict)  # producer id -> epoch
    # Order among the prompts this worker prefills, lower first (the scheduler's latest start
    # time, ms, under policy "slo"; 0 for all under "fcfs": arrival order). See batcher.py.
    priority: float = 0.0
    num_resumed_tokens: int = 0  # trailing outputs in prompt_token_ids (0: a fresh request)
    pause: PausePlan | None = None  # keep the KV when it ends (decode_here only)
    # The paused request whose KV on this worker the prompt continues: the longest common
    # prefix is reused, the rest computed. A worker without "P" takes such a job (decode_here):
    # the continuation's prefill runs where its KV is. Gone (expired, evicted): a plain prefill.
    resume_from: str | None = None


@dataclass(frozen=True)
class DecodeJob:
    request_id: str
    prompt_token_ids: list[int]  # as the PrefillJob's: the prompt, then any resumed outputs
    sampling_params: SamplingParams
    first_token_id: int  # the prefill's sampled token: output number num_resumed_tokens
    image_spans: list[ImageSpan]
    # [layers, 2, len(prompt_token_ids), kv_heads, head_dim]: engine_messages.PromptKV
    kv: TransferRef
    kv_dtype: str
    expected_epochs: dict[str, int] = field(default_factory=dict)
    num_resumed_tokens: int = 0  # trailing outputs in prompt_token_ids (see PrefillJob)
    pause: PausePlan | None = None  # keep the KV when it ends


@dataclass(frozen=True)
class EncodeDone:
    request_id: str
    embeddings: list[EmbeddingInput]  # refs to [image_tokens, hidden] arrays, in input order
    compute_ms: float  # decoding the images and running the vision tower
    queue_ms: float = 0.0  # job arrival -> encode start


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
    queue_ms: float = 0.0  # job arrival -> first step computing its prompt, less the fetches
    compute_ms: float = 0.0  # summed time of the steps that computed its prompt chunks


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
    """New tokens of one request since the previous poll, with the steps that made them."""

    request_id: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", "abort", or None while it continues
    # Decode steps that produced `token_ids` (the first token of a decode_here request is the
    # prefill's, not a decode step's), and their summed time.
    num_decode_steps: int = 0
    decode_compute_ms: float = 0.0
    # On the delta of the request's first decode step: its arrival for decode (the DecodeJob's
    # arrival; decode_here: the end of the step that sampled its first token) -> that step,
    # less the KV fetch. None on every other delta.
    decode_queue_ms: float | None = None
    # decode_here only, on the delta with the first token (None elsewhere): prompt tokens served
    # from the prefix cache. With it, the prefill's times, as PrefillDone reports them.
    num_cached_tokens: int | None = None
    prefill_queue_ms: float = 0.0
    prefill_compute_ms: float = 0.0


@dataclass(frozen=True)
class StageFailed:
    request_id: str
    stage: str  # "encode", "prefill" or "decode"
    reason: str
    retriable: bool  # True: re-drive from the last good stage (e.g. a corrupt or stale transfer)
    # True: the client's input can never be served (the engine's InvalidRequestError, an image
    # hash that is not its pixels', an undecodable image): fail the request as invalid input.
    is_invalid_input: bool = False


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
    # Filled every engine step (cheap): image embeddings in the worker's embedding cache, and
    # full KV blocks a prefix lookup can hit (used or evictable).
    num_embedding_cache_entries: int = 0
    num_prefix_cache_blocks: int = 0
    num_pinned_blocks: int = 0  # held by paused requests (sessions)
    num_paused: int = 0
    # The entries themselves, O(cache size): only in the answer to an explicit `load()` call,
    # empty in the load every poll carries.
    embedding_cache_keys: list[str] = field(default_factory=list)
    prefix_block_hashes: list[str] = field(default_factory=list)  # hex, of cached full blocks
    # What the worker measured at start-up and the step budgets it runs with: in the answer to
    # an explicit `load()` only (None when it did not profile).
    profile: WorkerProfile | None = None

    @property
    def num_active(self) -> int:
        return self.num_encode_queued + self.num_waiting + self.num_running


@dataclass(frozen=True)
class WorkerEvents:
    """Everything one worker did since the previous poll: normally one engine step, several
    when the poller fell behind (tokens merged per request)."""

    worker_id: str
    epoch: int
    tokens: list[TokenDelta] = field(default_factory=list)
    encodes: list[EncodeDone] = field(default_factory=list)
    prefills: list[PrefillDone] = field(default_factory=list)
    consumed: list[TransferConsumed] = field(default_factory=list)
    failures: list[StageFailed] = field(default_factory=list)
    step_ms: float = 0.0  # engine compute time covered by this message
    load: WorkerLoad | None = None
    num_steps: int = 0  # engine steps covered by this message
    # Cache entries gained and lost since the previous message, so the scheduler keeps each
    # worker's cache contents (for affinity) without listing them again: hex hashes of full
    # prefix-cache blocks, and image hashes of the embedding cache. An entry gained and lost
    # within the interval appears in neither.
    prefix_blocks_added: list[str] = field(default_factory=list)
    prefix_blocks_removed: list[str] = field(default_factory=list)
    embeddings_added: list[str] = field(default_factory=list)
    embeddings_removed: list[str] = field(default_factory=list)
    paused: list[PausedKV] = field(default_factory=list)  # ended paused since the last poll
    pauses_released: list[PauseReleased] = field(default_factory=list)
