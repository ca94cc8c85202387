"""The scheduler's configuration (frozen: measured values are returned, never written here)."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.mode import SchedulingMode

POLICIES = tuple(mode.value for mode in SchedulingMode)
ADMISSION_POLICIES = ("reject", "degrade", "best_effort")
REQUEST_CLASSES = ("sand", "pebble", "rock")


@dataclass(frozen=True)
class SchedulerConfig:
    # "slo" or "fcfs": what each means is in mode.py (read it through `mode`).
    policy: str = "slo"
    poll_timeout_s: float = 0.5  # longest a poll waits for a worker's next step
    # A worker whose poll fails is suspected (no new work; its requests fail over) and polled
    # with a backoff; it is dropped when it has not answered for this long (poller.py).
    worker_suspect_timeout_s: float = 30.0
    # Re-drives per request before it fails (each resumes after the tokens streamed so far).
    max_retries: int = 2
    trace_capacity: int = 10_000  # finished requests whose traces stay readable

    # ---- request classes (RPS-Serve): text is sand; a request is a rock when any holds
    rock_min_images: int = 4  # images or video frames
    rock_min_image_pixels: int = 2_000_000  # one high-resolution image (width * height)
    rock_min_prompt_tokens: int = 2048  # a very long prompt, image tokens included

    # ---- SLO targets of a request that sets none, per class (ms)
    sand_ttft_ms: float = 1_000.0
    sand_tpot_ms: float = 200.0
    pebble_ttft_ms: float = 3_000.0
    pebble_tpot_ms: float = 200.0
    rock_ttft_ms: float = 15_000.0
    rock_tpot_ms: float = 200.0

    # ---- admission and queues (policy "slo")
    admission: str = "reject"  # what a request that sets none does when predicted to miss
    max_queued_per_stage: int = 256  # beyond this a stage queue rejects, whatever the policy
    degrade_max_tokens: int = 16  # "degrade" caps max_tokens at this
    # Admission pads each forecast by its class's mean error plus this many mean deviations of
    # it (cost_model.LatencyResiduals). 0 admits on the mean error alone, so about half of the
    # requests forecast just under their target miss it; more refuses requests that would have
    # made it (measured with bench/serve: 2 refused most text requests at a rate all attained).
    admission_margin_deviations: float = 1.0
    # While the TTFT attainment of a class's admitted requests (an EWMA, cost_model.py) is
    # below this goal, the margin grows by one deviation per (1 - goal) of shortfall: at 0.9,
    # attainment 0.7 pads by 1 + 2 deviations. Above it, nothing changes.
    admission_attainment_goal: float = 0.9
    # A best-effort (or batch-priority) job yields to every other until it has waited this
    # long; then it competes by slack like the rest, so it waits a bounded time.
    best_effort_max_wait_ms: float = 20_000.0
    # A worker is given another encode or prefill job only while the work it already holds is
    # predicted to finish within this horizon: the rest wait in the scheduler's queues, where
    # a later, more urgent job can still overtake them.
    dispatch_horizon_ms: float = 150.0
    # How far back a stage queue looks at the jobs pushed to it to forecast the work that
    # later arrivals will put ahead of a new job (stage_queue.py); 0: queued work only. Off by
    # default: with 2000, bench/serve on 2 cores admitted pebbles better under 3x overload but
    # refused text and pebbles at a rate where every admitted request attained, because a
    # worker's batches mix chunks of urgent and patient prompts instead of running them in
    # strict priority as the forecast assumes.
    arrival_window_ms: float = 0.0
    # The EWMA weight of a new observation in the online cost model.
    cost_ewma_alpha: float = 0.2
    # What the cost model learned fades when nothing refreshes it: a stage's correction back
    # to 1 and a class's residual (error and deviation) back to 0, by half per half-life
    # since its last observation (cost_model.py). Under steady load observations come many
    # times a half-life and fading changes little; after a burst that taught a large error,
    # it lets the class be admitted again instead of being refused for good.
    correction_half_life_s: float = 30.0
    residual_half_life_s: float = 10.0

    # ---- sessions (sessions.py, pause_policy.py): paused KV between a conversation's calls
    session_pause_s: float = 10.0  # expected pause before any is observed, if the call says none
    session_scarce_fraction: float = 0.75  # KV used + pinned above this: pin only by min-waste
    session_ttl_factor: float = 3.0  # scarce memory: a pinned call's TTL is this x its pause
    session_max_ttl_s: float = 300.0  # plentiful memory: the TTL; scarce: at most this

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"scheduler.policy must be one of {POLICIES}, got {self.policy!r}")
        if self.admission not in ADMISSION_POLICIES:
            raise ValueError(
                f"scheduler.admission must be one of {ADMISSION_POLICIES}, got {self.admission!r}"
            )
        positive = {
            name: getattr(self, name)
            for name in (
                "sand_ttft_ms",
                "sand_tpot_ms",
                "pebble_ttft_ms",
                "pebble_tpot_ms",
                "rock_ttft_ms",
                "rock_tpot_ms",
                "dispatch_horizon_ms",
                "poll_timeout_s",
                "worker_suspect_timeout_s",
                "correction_half_life_s",
                "residual_half_life_s",
                "session_pause_s",
                "session_ttl_factor",
                "session_max_ttl_s",
            )
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"scheduler.{name} must be > 0, got {value}")
        for name in ("arrival_window_ms", "admission_margin_deviations"):
            if getattr(self, name) < 0:
                raise ValueError(f"scheduler.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_queued_per_stage < 1 or self.degrade_max_tokens < 1:
            raise ValueError("scheduler.max_queued_per_stage and degrade_max_tokens must be >= 1")
        if not 0 < self.admission_attainment_goal < 1:
            raise ValueError(
                "scheduler.admission_attainment_goal must be in (0, 1), "
                f"got {self.admission_attainment_goal}"
            )
        if not 0 < self.session_scarce_fraction <= 1:
            raise ValueError("scheduler.session_scarce_fraction must be in (0, 1]")
        if not 0 < self.cost_ewma_alpha <= 1:
            raise ValueError(
                f"scheduler.cost_ewma_alpha must be in (0, 1], got {self.cost_ewma_alpha}"
            )

    @property
    def mode(self) -> SchedulingMode:
        return SchedulingMode(self.policy)

    def slo_for(self, request_class: str) -> tuple[float, float]:
        """The (TTFT, TPOT) targets in ms of a request of this class that sets none."""
        return getattr(self, f"{request_class}_ttft_ms"), getattr(self, f"{request_class}_tpot_ms")

    @property
    def strictest_tpot_ms(self) -> float:
        """The TPOT target workers derive their step budgets from."""
        return min(self.sand_tpot_ms, self.pebble_tpot_ms, self.rock_tpot_ms)
