"""The outcome of every request against its SLO, and the cache hits placement won, counted
per request class since start-up (for cluster state, metrics and the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.request_class import RequestClass
from scheduler.trace import Trace


@dataclass
class ClassOutcomes:
    num_finished: int = 0  # ended with their last token (attained or not)
    num_attained: int = 0  # finished within both targets
    num_rejected: int = 0  # refused at admission (RESOURCE_EXHAUSTED)
    num_degraded: int = 0  # admitted with max_tokens capped
    num_best_effort: int = 0  # admitted at low priority although predicted to miss
    num_failed: int = 0  # failed after admission
    num_cancelled: int = 0  # cancelled after admission: the client went away


@dataclass(frozen=True)
class RequestOutcome:
    """One finished request, as recorded in its trace's "slo" event."""

    request_id: str
    request_class: str
    ttft_ms: float
    tpot_ms: float | None  # None with fewer than two tokens
    e2e_ms: float
    num_tokens: int
    attained: bool


@dataclass(frozen=True)
class EndedRequest:
    """What observers (metrics) hear when a request ends or is rejected at admission."""

    request_id: str
    request_class: str
    state: str  # "finished", "failed", "cancelled" or "rejected"
    outcome: RequestOutcome | None  # finished requests only
    trace: Trace | None  # None when rejected: it never started


@dataclass
class SloLedger:
    classes: dict[str, ClassOutcomes] = field(
        default_factory=lambda: {c.value: ClassOutcomes() for c in RequestClass}
    )
    num_prompt_tokens: int = 0  # of prefills that reported their cache hits
    num_cached_prompt_tokens: int = 0  # served from a prefix cache
    num_images: int = 0  # of admitted requests
    num_images_not_encoded: int = 0  # prefilled from embeddings a worker already held
    num_prefix_affinity_placements: int = 0  # prefills placed where some prefix blocks were

    def finished(self, outcome: RequestOutcome) -> None:
        counts = self.classes[outcome.request_class]
        counts.num_finished += 1
        counts.num_attained += int(outcome.attained)

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_cached_prompt_tokens / max(1, self.num_prompt_tokens)

    @property
    def embedding_hit_rate(self) -> float:
        return self.num_images_not_encoded / max(1, self.num_images)
