"""WorkerClient: the scheduler's view of one worker, what it must offer, and the rules both sides
keep (the one text of these rules; the messages they name are in messages.py).

Two implementations sit behind this Protocol, each next to what it wraps: `RayWorkerClient`
(workers/ray_client.py) over a WorkerActor handle, and `LocalWorkerClient`
(workers/local_client.py) over a WorkerCore in this process. Rules:

- **Job ids name attempts.** The `request_id` of a job is the request's id on its first attempt
  and `"<request_id>~<n>"` on its n-th re-drive. Events echo the job's id; events for an id the
  scheduler no longer tracks are ignored, so a late event of an old attempt is harmless.
- **A re-drive resumes.** Its `PrefillJob` (and `DecodeJob`) may end `prompt_token_ids` with
  `num_resumed_tokens` outputs the client already has; the worker computes their KV like the
  prompt's and streams only what comes after them, sampled at the output index and seed an
  uninterrupted run would use, with max_tokens and stop conditions counted from the prompt.
- **One poll, everything since the previous one.** `poll(timeout_s)` returns as soon as the
  worker has something to report, or an empty `WorkerEvents` (with its load) after
  `timeout_s`. A message normally covers one engine step; when the poller falls behind it
  covers several (`WorkerEvents.num_steps`), with each request's tokens merged into one
  `TokenDelta` whose `num_decode_steps` and `decode_compute_ms` add up. The trace's decode
  step count sums `num_decode_steps`, so it counts engine steps, not messages. A poll that
  raises makes the worker *suspected* (scheduler/poller.py): its requests are re-driven, it
  gets no new work, and it is polled again with a backoff. Answering with the same epoch makes
  it usable again; a newer epoch means it restarted and lost what it held, and it is taken back
  with the caches it now reports; silent past `worker_suspect_timeout_s` it is dropped and the
  pool manager replaces it.
- **Who reports the first token.** With `PrefillJob.decode_here`, every token, the first one
  included, comes as a `TokenDelta`; the one with the first token also carries
  `num_cached_tokens` and the prefill's `queue_ms`/`compute_ms` (no `PrefillDone` is sent).
  Without it, the first token comes in `PrefillDone` only. A `DecodeJob` streams the tokens
  after `first_token_id`.
- **Transfers.** An `EncodeJob` with `export` puts every image's embeddings in the transport as
  a `TransferRef`; without it (prefill will run on the encode worker) they normally stay in
  its embedding cache only, every ref None. The consumer checks checksum and `expected_epochs`,
  reports `TransferConsumed`, or a retriable `StageFailed` when the array is missing, corrupt
  or stale. The producer frees an array on `release([transfer_id])`; the scheduler also
  releases the refs it never routes (a prefill on the encode worker itself reads its own
  embedding cache: `EmbeddingInput.ref is None`).
- **Errors.** `submit_*` raises `InvalidRequestError` (errors.py) for input the worker refuses;
  the request fails with it, as it does on a `StageFailed` with `is_invalid_input`. Any other
  exception makes the scheduler drop the worker (its requests are re-driven). `abort` and
  `release` of an id the worker does not hold (never had, finished, already freed) do nothing.
- **Paused KV (sessions).** A job with a `pause` plan that ends (stop or length, not abort or a
  failure) keeps its blocks pinned on its worker; the next poll reports it in
  `WorkerEvents.paused`. A `PrefillJob` with `resume_from` continues it: the worker reuses the
  KV of the longest common token prefix (images agreeing) and computes only the rest; a worker
  without the P stage takes such a job when `decode_here` (the continuation's prefill runs where
  its KV is). When the paused KV is gone (expired after `ttl_s`, or evicted under memory
  pressure before any running request is preempted: one past its expected return first, else
  the one expected back last) the job is a plain prefill with the prefix cache: the tokens are
  the same either way. Every release (`resumed`,
  `expired`, `evicted`, or `released` on `release_paused`) comes once in
  `WorkerEvents.pauses_released`. `WorkerLoad.num_pinned_blocks` counts what paused requests hold.
- **Times** (`queue_ms`, `compute_ms`, in ms) are measured by the worker; the trace keeps them
  (see scheduler/lifecycle.py), and messages.py says what each one covers.
"""

from __future__ import annotations

from typing import Protocol

from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob, WorkerEvents, WorkerLoad


class WorkerClient(Protocol):
    worker_id: str
    stages: str  # a non-empty subset of "EPD", e.g. "E", "PD", "EPD"
    pool: str  # the pool the worker belongs to (for snapshots and metrics)
    model: str  # the model it serves

    async def submit_encode(self, job: EncodeJob) -> None: ...

    async def submit_prefill(self, job: PrefillJob) -> None: ...

    async def submit_decode(self, job: DecodeJob) -> None: ...

    async def poll(self, timeout_s: float) -> WorkerEvents: ...

    async def abort(self, request_id: str) -> None: ...

    async def release(self, transfer_ids: list[str]) -> None: ...

    async def release_paused(self, request_ids: list[str]) -> None: ...

    async def load(self) -> WorkerLoad: ...
