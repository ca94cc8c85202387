"""The cost model: how long each stage takes on each worker, and how long a transfer takes.

Each worker's start-up profile (workers/contract/cost_profile.py) gives the shape of its costs; the
scheduler then corrects each stage online with an EWMA of observed / predicted time, so that a
worker that is slower than it profiled (a shared core, a hot GPU) is predicted slower:

    predicted = profile_fit(units) * correction[stage]
    correction <- correction * (1 - alpha + alpha * clamp(observed / predicted))

A worker that did not profile (a test's fake worker) starts from PRIOR_* and is corrected by
the same rule. Transfers are learned, not profiled: bytes per embedding row, bytes per KV token
and the fetch bandwidth each come from `TransferConsumed` reports.

What no stage accounts for (the ingress, Ray hops, polling, a host short of cores) is learned
per request class as the EWMA of measured minus predicted TTFT (at each first token) and TPOT
(at each end), with the EWMA of its deviation; admission adds the mean plus
`SchedulerConfig.admission_margin_deviations` deviations to later forecasts
(`LatencyResiduals`).

Everything learned fades when nothing refreshes it: a correction back toward 1 and a residual
back toward 0, by half every `SchedulerConfig.correction_half_life_s` / `residual_half_life_s`
since its last observation. Both learn only from admitted requests, so without fading a burst
that taught them a large error would lock a class out for good: every forecast would pass its
target, nothing would be admitted, and nothing would correct them (`fade`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.stage import Stage
from workers.contract.cost_profile import DecodeCost, LinearCost, WorkerProfile

# Starting points until a worker's profile or first observations say otherwise (CPU-ish).
PRIOR_ENCODE = LinearCost(base_ms=2.0, per_unit_ms=0.2)  # per image token
PRIOR_PREFILL = LinearCost(base_ms=2.0, per_unit_ms=0.1)  # per prompt token
PRIOR_DECODE = DecodeCost(base_ms=2.0, per_seq_ms=0.5, per_context_token_ms=0.0)
# An observation off by more than this factor is clamped: one stall must not swing the model.
MAX_CORRECTION_STEP = 4.0


def fade(value: float, neutral: float, age_ms: float, half_life_ms: float) -> float:
    """`value`, learned `age_ms` ago, moved toward `neutral` by half each half-life."""
    if half_life_ms == math.inf or age_ms <= 0:
        return value
    return neutral + (value - neutral) * 0.5 ** (age_ms / half_life_ms)


def _no_clock() -> float:
    return 0.0


@dataclass(frozen=True)
class WorkerCostSnapshot:
    """One worker's cost model as cluster state shows it."""

    encode: LinearCost | None
    prefill: LinearCost | None
    decode: DecodeCost | None
    corrections: dict[str, float]  # stage name -> observed / profiled, EWMA
    num_observations: dict[str, int]  # stage name -> observations folded in
    max_num_batched_tokens: int | None  # the worker's step budgets (None: not profiled)
    max_encode_images: int | None


class WorkerCosts:
    """`clock_ms` and `half_life_ms` fade the corrections (the default: never)."""

    def __init__(
        self,
        profile: WorkerProfile | None,
        alpha: float,
        clock_ms: Callable[[], float] = _no_clock,
        half_life_ms: float = math.inf,
    ) -> None:
        self.profile = profile
        self.alpha = alpha
        self.clock_ms = clock_ms
        self.half_life_ms = half_life_ms
        self.encode = (profile.encode if profile else None) or PRIOR_ENCODE
        self.prefill = (profile.prefill if profile else None) or PRIOR_PREFILL
        self.decode = (profile.decode if profile else None) or PRIOR_DECODE
        self.corrections = {stage: 1.0 for stage in Stage}  # as last learned
        self._learned_ms = {stage: 0.0 for stage in Stage}
        self.num_observations = {stage: 0 for stage in Stage}

    def correction(self, stage: Stage) -> float:
        """observed / profiled time of `stage`, as learned and faded since."""
        age_ms = self.clock_ms() - self._learned_ms[stage]
        return fade(self.corrections[stage], 1.0, age_ms, self.half_life_ms)

    def encode_ms(self, num_image_tokens: int, num_pixels: int = 0) -> float:
        """Encoding images of `num_image_tokens` embedding rows, `num_pixels` as sent."""
        if num_image_tokens <= 0:
            return 0.0
        per_megapixel = self.profile.encode_ms_per_megapixel if self.profile else 0.0
        compute = self.encode.predict(num_image_tokens) + per_megapixel * num_pixels / 1e6
        return compute * self.correction(Stage.ENCODE)

    def prefill_ms(self, num_tokens: int) -> float:
        """Prefill of `num_tokens` uncached prompt tokens, in chunks of the worker's budget."""
        if num_tokens <= 0:
            return 0.0
        budget = self.profile.budgets.max_num_batched_tokens if self.profile else num_tokens
        num_chunks = -(-num_tokens // max(1, budget))
        per_chunk_base = self.prefill.base_ms * num_chunks
        per_token = self.prefill.per_unit_ms * num_tokens
        return (per_chunk_base + per_token) * self.correction(Stage.PREFILL)

    def decode_step_ms(self, batch: int, context_tokens: int) -> float:
        return self.decode.predict(batch, context_tokens) * self.correction(Stage.DECODE)

    def observe(self, stage: Stage, predicted_ms: float, observed_ms: float) -> None:
        """Fold in one measured time of a job predicted (with the current correction) to take
        `predicted_ms`."""
        if predicted_ms <= 0 or observed_ms <= 0:
            return
        ratio = min(MAX_CORRECTION_STEP, max(1 / MAX_CORRECTION_STEP, observed_ms / predicted_ms))
        current = self.correction(stage)
        self.corrections[stage] = (1 - self.alpha) * current + self.alpha * current * ratio
        self._learned_ms[stage] = self.clock_ms()
        self.num_observations[stage] += 1

    def snapshot(self) -> WorkerCostSnapshot:
        budgets = self.profile.budgets if self.profile else None
        return WorkerCostSnapshot(
            encode=self.encode,
            prefill=self.prefill,
            decode=self.decode,
            corrections={stage.value: self.correction(stage) for stage in Stage},
            num_observations={stage.value: n for stage, n in self.num_observations.items()},
            max_num_batched_tokens=budgets.max_num_batched_tokens if budgets else None,
            max_encode_images=budgets.max_encode_images if budgets else None,
        )


class TransferCosts:
    """Learned sizes and bandwidth of embedding and KV transfers."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.bytes_per_embedding_row: float | None = None
        self.bytes_per_kv_token: float | None = None
        self.bytes_per_ms: float | None = None

    def embedding_ms(self, num_image_tokens: int) -> float:
        return self._ms(self.bytes_per_embedding_row, num_image_tokens)

    def kv_ms(self, num_tokens: int) -> float:
        return self._ms(self.bytes_per_kv_token, num_tokens)

    def observe(self, kind: str, nbytes: int, num_units: int, fetch_ms: float) -> None:
        """One consumed transfer of `num_units` embedding rows ("embedding") or tokens ("kv")."""
        if nbytes <= 0:
            return
        if num_units > 0:
            per_unit = nbytes / num_units
            if kind == "embedding":
                self.bytes_per_embedding_row = self._ewma(self.bytes_per_embedding_row, per_unit)
            else:
                self.bytes_per_kv_token = self._ewma(self.bytes_per_kv_token, per_unit)
        if fetch_ms > 0:
            self.bytes_per_ms = self._ewma(self.bytes_per_ms, nbytes / fetch_ms)

    def _ms(self, bytes_per_unit: float | None, num_units: int) -> float:
        if bytes_per_unit is None or self.bytes_per_ms is None or num_units <= 0:
            return 0.0
        return bytes_per_unit * num_units / self.bytes_per_ms

    def _ewma(self, current: float | None, value: float) -> float:
        return value if current is None else (1 - self.alpha) * current + self.alpha * value


class LatencyResiduals:
    """Per request class: measured minus predicted TTFT and TPOT (ms; 0 until seen), as an EWMA
    of the error and an EWMA of its absolute deviation from that mean (as TCP estimates its
    round-trip time and variance): admission pads a forecast by the mean error plus a few
    deviations, so that a request it admits makes its target even when its error is a bad one.
    """

    def __init__(
        self,
        alpha: float,
        clock_ms: Callable[[], float] = _no_clock,
        half_life_ms: float = math.inf,
    ) -> None:
        self.alpha = alpha
        self.clock_ms = clock_ms
        self.half_life_ms = half_life_ms
        # As last learned, before fading (`_faded` fades them).
        self.ttft_ms: dict[str, float] = {}
        self.tpot_ms: dict[str, float] = {}
        self.ttft_dev_ms: dict[str, float] = {}
        self.tpot_dev_ms: dict[str, float] = {}
        self._learned_ms: dict[tuple[str, str], float] = {}  # ("ttft" | "tpot", class) -> when

    def observe_ttft(self, request_class: str, predicted_ms: float, measured_ms: float) -> None:
        """At the first token, not the end: under a load that grows, the sooner the better."""
        error = measured_ms - predicted_ms
        self._fold("ttft", self.ttft_ms, self.ttft_dev_ms, request_class, error)

    def observe_tpot(self, request_class: str, predicted_ms: float, measured_ms: float) -> None:
        error = measured_ms - predicted_ms
        self._fold("tpot", self.tpot_ms, self.tpot_dev_ms, request_class, error)

    def ttft_margin_ms(self, request_class: str, num_deviations: float) -> float:
        mean, deviation = self._faded("ttft", self.ttft_ms, self.ttft_dev_ms, request_class)
        return mean + num_deviations * deviation

    def tpot_margin_ms(self, request_class: str, num_deviations: float) -> float:
        mean, deviation = self._faded("tpot", self.tpot_ms, self.tpot_dev_ms, request_class)
        return mean + num_deviations * deviation

    def _faded(
        self, kind: str, means: dict[str, float], deviations: dict[str, float], request_class: str
    ) -> tuple[float, float]:
        """The class's mean error and deviation (0, 0 until seen), faded toward 0 since."""
        if request_class not in means:
            return 0.0, 0.0
        age_ms = self.clock_ms() - self._learned_ms[(kind, request_class)]
        mean = fade(means[request_class], 0.0, age_ms, self.half_life_ms)
        return mean, fade(deviations[request_class], 0.0, age_ms, self.half_life_ms)

    def _fold(
        self,
        kind: str,
        means: dict[str, float],
        deviations: dict[str, float],
        request_class: str,
        error: float,
    ) -> None:
        if request_class not in means:  # the first error: its size is all we know of the spread
            mean, deviation = error, abs(error) / 2
        else:
            mean, deviation = self._faded(kind, means, deviations, request_class)
            a = self.alpha
            deviation = (1 - a) * deviation + a * abs(error - mean)
            mean = (1 - a) * mean + a * error
        means[request_class], deviations[request_class] = mean, deviation
        self._learned_ms[(kind, request_class)] = self.clock_ms()


class TtftAttainment:
    """Per request class: the EWMA of whether admitted requests made their TTFT target (1 or 0,
    at their first token), fading back to 1 like the residuals. Admission widens its margin
    while it is below its goal (admission.py): the residuals learn an error only after it
    happened, and under a load that grows they lag behind it."""

    def __init__(
        self, alpha: float, clock_ms: Callable[[], float] = _no_clock, half_life_ms=math.inf
    ) -> None:
        self.alpha = alpha
        self.clock_ms = clock_ms
        self.half_life_ms = half_life_ms
        self._rates: dict[str, float] = {}  # as last learned
        self._learned_ms: dict[str, float] = {}

    def rate(self, request_class: str) -> float:
        if request_class not in self._rates:
            return 1.0
        age_ms = self.clock_ms() - self._learned_ms[request_class]
        return fade(self._rates[request_class], 1.0, age_ms, self.half_life_ms)

    def observe(self, request_class: str, attained: bool) -> None:
        rate = self.rate(request_class)
        self._rates[request_class] = (1 - self.alpha) * rate + self.alpha * float(attained)
        self._learned_ms[request_class] = self.clock_ms()


class CostModel:
    """`clock_ms` and the half-lives (ms) fade what is learned (the defaults: never)."""

    def __init__(
        self,
        alpha: float,
        clock_ms: Callable[[], float] = _no_clock,
        correction_half_life_ms: float = math.inf,
        residual_half_life_ms: float = math.inf,
    ) -> None:
        self.alpha = alpha
        self.clock_ms = clock_ms
        self.correction_half_life_ms = correction_half_life_ms
        self.transfers = TransferCosts(alpha)
        self.residuals = LatencyResiduals(alpha, clock_ms, residual_half_life_ms)
        self.attainment = TtftAttainment(alpha, clock_ms, residual_half_life_ms)
        self._workers: dict[str, WorkerCosts] = {}

    def add_worker(self, worker_id: str, profile: WorkerProfile | None) -> None:
        self._workers[worker_id] = WorkerCosts(
            profile, self.alpha, self.clock_ms, self.correction_half_life_ms
        )

    def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def __getitem__(self, worker_id: str) -> WorkerCosts:
        return self._workers[worker_id]

    def get(self, worker_id: str) -> WorkerCosts | None:
        return self._workers.get(worker_id)

    def snapshot(self) -> dict[str, WorkerCostSnapshot]:
        return {worker_id: costs.snapshot() for worker_id, costs in self._workers.items()}
