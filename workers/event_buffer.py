"""EventBuffer: what a worker did and has not yet reported, gathered for one `WorkerEvents`.

The engine thread fills one per turn; the worker merges turns into the buffer the next poll
takes. A poller that falls behind thus gets several steps in one message: `num_steps` says how
many, and each request's token deltas are merged into one, their step counts and times summed.
Cache deltas merge net (cache_delta.py): an entry gained in one turn and lost in a later
one of the same message is in neither list, so a message covering several turns stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from workers.cache_delta import CacheDelta
from workers.contract.messages import (
    EncodeDone,
    PausedKV,
    PauseReleased,
    PrefillDone,
    StageFailed,
    TokenDelta,
    TransferConsumed,
    WorkerEvents,
    WorkerLoad,
)


@dataclass
class EventBuffer:
    """Events not yet polled. Token deltas are merged per request, in arrival order."""

    tokens: dict[str, TokenDelta] = field(default_factory=dict)
    encodes: list[EncodeDone] = field(default_factory=list)
    prefills: list[PrefillDone] = field(default_factory=list)
    consumed: list[TransferConsumed] = field(default_factory=list)
    failures: list[StageFailed] = field(default_factory=list)
    step_ms: float = 0.0  # engine.step time only; encode time is in each EncodeDone
    num_steps: int = 0
    prefix_blocks: CacheDelta[str] = field(default_factory=CacheDelta)  # hex block hashes
    embeddings: CacheDelta[str] = field(default_factory=CacheDelta)  # image hashes
    paused: list[PausedKV] = field(default_factory=list)
    pauses_released: list[PauseReleased] = field(default_factory=list)

    def add_tokens(self, delta: TokenDelta) -> None:
        earlier = self.tokens.get(delta.request_id)
        if earlier is not None:
            delta = _merged(earlier, delta)
        self.tokens[delta.request_id] = delta

    def merge(self, later: EventBuffer) -> None:
        for delta in later.tokens.values():
            self.add_tokens(delta)
        self.encodes += later.encodes
        self.prefills += later.prefills
        self.consumed += later.consumed
        self.failures += later.failures
        self.step_ms += later.step_ms
        self.num_steps += later.num_steps
        self.prefix_blocks.merge(later.prefix_blocks)
        self.embeddings.merge(later.embeddings)
        self.paused += later.paused
        self.pauses_released += later.pauses_released

    def is_empty(self) -> bool:
        has_events = self.tokens or self.encodes or self.prefills or self.consumed or self.failures
        has_events = has_events or self.paused or self.pauses_released
        return not has_events and self.prefix_blocks.is_empty() and self.embeddings.is_empty()

    def to_message(self, worker_id: str, epoch: int, load: WorkerLoad) -> WorkerEvents:
        return WorkerEvents(
            worker_id=worker_id,
            epoch=epoch,
            tokens=list(self.tokens.values()),
            encodes=self.encodes,
            prefills=self.prefills,
            consumed=self.consumed,
            failures=self.failures,
            step_ms=self.step_ms,
            load=load,
            num_steps=self.num_steps,
            prefix_blocks_added=list(self.prefix_blocks.added),
            prefix_blocks_removed=list(self.prefix_blocks.removed),
            embeddings_added=list(self.embeddings.added),
            embeddings_removed=list(self.embeddings.removed),
            paused=self.paused,
            pauses_released=self.pauses_released,
        )


def _merged(earlier: TokenDelta, later: TokenDelta) -> TokenDelta:
    """One delta for two polls' worth: tokens and step counts add up, one-off fields stay."""
    first = earlier if earlier.num_cached_tokens is not None else later  # the first token's
    return replace(
        later,
        token_ids=earlier.token_ids + later.token_ids,
        num_decode_steps=earlier.num_decode_steps + later.num_decode_steps,
        decode_compute_ms=earlier.decode_compute_ms + later.decode_compute_ms,
        decode_queue_ms=(
            earlier.decode_queue_ms
            if earlier.decode_queue_ms is not None
            else later.decode_queue_ms
        ),
        num_cached_tokens=first.num_cached_tokens,
        prefill_queue_ms=first.prefill_queue_ms,
        prefill_compute_ms=first.prefill_compute_ms,
    )
