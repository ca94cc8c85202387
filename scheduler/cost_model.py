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
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.stage import Stage
from workers.contract.cost_profile import DecodeCost, LinearCost, WorkerProfile

# Starting points until a worker's profile or first observations say otherwise (CPU-ish).
PRIOR_ENCODE = LinearCost(base_ms=2.0, per_unit_ms=0.2)  # per image token
PRIOR_PREFILL = LinearCost(base_ms=2.0, per_unit_ms=0.1)  # per prompt token
PRIOR_DECODE = DecodeCost(base_ms=2.0, per_seq_ms=0.5, per_context_token_ms=0.0)
# An observation off by more than this factor is clamped: one stall must not swing the model.
MAX_CORRECTION_STEP = 4.0


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
    def __init__(self, profile: WorkerProfile | None, alpha: float) -> None:
        self.profile = profile
        self.alpha = alpha
        self.encode = (profile.encode if profile else None) or PRIOR_ENCODE
        self.prefill = (profile.prefill if profile else None) or PRIOR_PREFILL
        self.decode = (profile.decode if profile else None) or PRIOR_DECODE
        self.corrections = {stage: 1.0 for stage in Stage}
        self.num_observations = {stage: 0 for stage in Stage}

    def encode_ms(self, num_image_tokens: int) -> float:
        if num_image_tokens <= 0:
            return 0.0
        return self.encode.predict(num_image_tokens) * self.corrections[Stage.ENCODE]

    def prefill_ms(self, num_tokens: int) -> float:
        """Prefill of `num_tokens` uncached prompt tokens, in chunks of the worker's budget."""
        if num_tokens <= 0:
            return 0.0
        budget = self.profile.budgets.max_num_batched_tokens if self.profile else num_tokens
        num_chunks = -(-num_tokens // max(1, budget))
        per_chunk_base = self.prefill.base_ms * num_chunks
        return (per_chunk_base + self.prefill.per_unit_ms * num_tokens) * self.corrections[
            Stage.PREFILL
        ]

    def decode_step_ms(self, batch: int, context_tokens: int) -> float:
        return self.decode.predict(batch, context_tokens) * self.corrections[Stage.DECODE]

    def observe(self, stage: Stage, predicted_ms: float, observed_ms: float) -> None:
        """Fold in one measured time of a job predicted (with the current correction) to take
        `predicted_ms`."""
        if predicted_ms <= 0 or observed_ms <= 0:
            return
        ratio = min(MAX_CORRECTION_STEP, max(1 / MAX_CORRECTION_STEP, observed_ms / predicted_ms))
        current = self.corrections[stage]
        self.corrections[stage] = (1 - self.alpha) * current + self.alpha * current * ratio
        self.num_observations[stage] += 1

    def snapshot(self) -> WorkerCostSnapshot:
        budgets = self.profile.budgets if self.profile else None
        return WorkerCostSnapshot(
            encode=self.encode,
            prefill=self.prefill,
            decode=self.decode,
            corrections={stage.value: value for stage, value in self.corrections.items()},
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

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.ttft_ms: dict[str, float] = {}
        self.tpot_ms: dict[str, float] = {}
        self.ttft_dev_ms: dict[str, float] = {}
        self.tpot_dev_ms: dict[str, float] = {}

    def observe_ttft(self, request_class: str, predicted_ms: float, measured_ms: float) -> None:
        """At the first token, not the end: under a load that grows, the sooner the better."""
        self._fold(self.ttft_ms, self.ttft_dev_ms, request_class, measured_ms - predicted_ms)

    def observe_tpot(self, request_class: str, predicted_ms: float, measured_ms: float) -> None:
        self._fold(self.tpot_ms, self.tpot_dev_ms, request_class, measured_ms - predicted_ms)

    def ttft_margin_ms(self, request_class: str, num_deviations: float) -> float:
        return _margin(self.ttft_ms, self.ttft_dev_ms, request_class, num_deviations)

    def tpot_margin_ms(self, request_class: str, num_deviations: float) -> float:
        return _margin(self.tpot_ms, self.tpot_dev_ms, request_class, num_deviations)

    def _fold(
        self,
        means: dict[str, float],
        deviations: dict[str, float],
        request_class: str,
        error: float,
    ) -> None:
        mean = means.get(request_class)
        if mean is None:  # the first error: its size is all we know of the spread
            means[request_class], deviations[request_class] = error, abs(error) / 2
            return
        a = self.alpha
        deviations[request_class] = (1 - a) * deviations[request_class] + a * abs(error - mean)
        means[request_class] = (1 - a) * mean + a * error


def _margin(
    means: dict[str, float], deviations: dict[str, float], request_class: str, k: float
) -> float:
    return means.get(request_class, 0.0) + k * deviations.get(request_class, 0.0)


class CostModel:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.transfers = TransferCosts(alpha)
        self.residuals = LatencyResiduals(alpha)
        self._workers: dict[str, WorkerCosts] = {}

    def add_worker(self, worker_id: str, profile: WorkerProfile | None) -> None:
        self._workers[worker_id] = WorkerCosts(profile, self.alpha)

    def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def __getitem__(self, worker_id: str) -> WorkerCosts:
        return self._workers[worker_id]

    def get(self, worker_id: str) -> WorkerCosts | None:
        return self._workers.get(worker_id)

    def snapshot(self) -> dict[str, WorkerCostSnapshot]:
        return {worker_id: costs.snapshot() for worker_id, costs in self._workers.items()}
