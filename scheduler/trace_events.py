"""The names of a request's trace events, and the attributes each carries.

Every event is written once per occurrence into the request's `Trace` (scheduler/trace.py); a
re-drive repeats the stage events, and readers add them up. The lifecycle (lifecycle.py) writes
the state events; the scheduler the stage events in between. Readers never match names by text:
they use these members (equal to their strings, so the wire form and old traces still match) and
one parser, `trace_breakdown.py`. Times (`*_ms` attributes) are measured by the workers unless
said otherwise (the worker protocol's messages carry them).
"""

from __future__ import annotations

from enum import StrEnum


class EventName(StrEnum):
    # --- state events (lifecycle.py); attrs are whatever the transition was given
    QUEUED = "queued"  # the scheduler took the request, or a re-drive put it back in line
    ENCODE_START = "encode_start"  # its encode job left for a worker: worker
    PREFILL_START = "prefill_start"  # its prefill job left for a worker: worker, decode_here
    DECODE_START = "decode_start"  # its decode started: worker
    FINISHED = "finished"  # finish_reason (stop, length), num_tokens
    FAILED = "failed"  # reason (the client's error text), when there is one
    CANCELLED = "cancelled"  # reason, when there is one
    # Decode steps are counted, not logged one by one: one event at the end (before the state
    # event), summed over re-drives: count, compute_ms, queue_ms (arrival for decode -> first
    # decode step, each attempt).
    DECODE_STEPS = "decode_steps"

    # --- scheduler events
    # Admission's verdict: request_class, admission (admit, degrade, best_effort),
    # predicted_ttft_ms, predicted_tpot_ms, ttft_target_ms, tpot_target_ms, image_tokens,
    # model_ttft_ms, model_tpot_ms (the cost model's own figures, before any margin).
    CLASSIFIED = "classified"
    # A stage's job left the scheduler's queue for a worker: stage, worker, order (dispatch
    # sequence number), waited_ms (time in the scheduler's queue), predicted_ms,
    # latest_start_ms.
    DISPATCHED = "dispatched"
    # Embedding affinity: a prefill worker already holds every image's embeddings, so encode
    # never runs: worker, num_images.
    ENCODE_SKIPPED = "encode_skipped"
    ENCODE_DONE = "encode_done"  # worker, compute_ms (vision tower), queue_ms (arrival -> start)
    # The prefill worker fetched the embeddings (not in any queue_ms): bytes, ms, producer,
    # consumer.
    EMBEDDING_TRANSFER = "embedding_transfer"
    # The first token: worker, compute_ms (prefill steps), queue_ms (arrival -> first step).
    FIRST_TOKEN = "first_token"
    # The decode worker fetched the prompt's KV: bytes, ms, producer, consumer.
    KV_TRANSFER = "kv_transfer"
    # A failed attempt restarts: stage, attempt, resumed_tokens (the client's, which the new
    # attempt continues after), reason (one line).
    REDRIVE = "redrive"
    # Its SLO outcome, when it finished: request_class, ttft_ms, tpot_ms, attained.
    SLO = "slo"
    # Sessions (scheduler/sessions.py). A call continues a paused call's KV: worker (where its
    # prefill runs, whatever its stages), resume_from, paused_ms. Or it runs anywhere: the
    # session's KV is not pinned (never was, let go, or its worker is gone): session_id.
    CONTINUES = "continues"
    NOT_CONTINUED = "not_continued"
    # The job that ends a session's call keeps its KV: worker, ttl_s, expected_pause_s; or
    # lets it go by cost (pause_policy.py): worker.
    PAUSE_PLANNED = "pause_planned"
    NOT_PAUSED = "not_paused"

    @classmethod
    def transfer(cls, kind: str) -> EventName:
        """The event of a transfer of `kind` ("embedding" or "kv")."""
        return TRANSFER_EVENTS[kind]


# transfer kind -> its event; the stage that waits for each is in trace_breakdown.py
TRANSFER_EVENTS = {"embedding": EventName.EMBEDDING_TRANSFER, "kv": EventName.KV_TRANSFER}
