"""What a worker measured about its own speed, and the per-step budgets it derived from that.

Pure Python (no torch): the worker fills it at start-up (workers/profiler.py), the scheduler's
cost model (scheduler/cost_model.py) predicts from it and corrects it online.

    encode   ms = base_ms + per_unit_ms * image_tokens            (one encode call)
    prefill  ms = base_ms + per_unit_ms * prompt_tokens            (one step computing them)
    decode   ms = base_ms + per_seq_ms * batch + per_context_token_ms * context_tokens
                                                                    (one step, whole batch)

Budgets follow HydraInfer: a step that decodes must stay within the TPOT target, so whatever
prefill chunk or encode shares the turn gets what the decode step leaves of it:

    |<---------------------------- TPOT target ---------------------------->|
    | decode step (reference batch) | prefill chunk <= token budget | encode |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LinearCost:
    """ms = base_ms + per_unit_ms * units, both >= 0."""

    base_ms: float
    per_unit_ms: float

    def predict(self, units: float) -> float:
        return self.base_ms + self.per_unit_ms * units

    def max_units_within(self, ms: float) -> float:
        """The most units whose predicted time stays within `ms` (inf when free)."""
        if self.per_unit_ms <= 0:
            return float("inf") if ms >= self.base_ms else 0.0
        return max(0.0, (ms - self.base_ms) / self.per_unit_ms)

    @classmethod
    def fit(cls, points: Sequence[tuple[float, float]]) -> LinearCost:
        """Least squares through (units, ms) points, with both coefficients clamped to >= 0."""
        if not points:
            raise ValueError("no points to fit")
        base, slope = _solve_clamped([[1.0, float(u)] for u, _ in points], [ms for _, ms in points])
        return cls(base, slope)


@dataclass(frozen=True)
class DecodeCost:
    """One decode step: ms = base_ms + per_seq_ms * batch + per_context_token_ms * context,
    where context is the batch's summed context length (the KV the step reads)."""

    base_ms: float
    per_seq_ms: float
    per_context_token_ms: float

    def predict(self, batch: int, context_tokens: int) -> float:
        if batch <= 0:
            return 0.0
        return self.base_ms + self.per_seq_ms * batch + self.per_context_token_ms * context_tokens

    @classmethod
    def fit(cls, points: Sequence[tuple[int, int, float]]) -> DecodeCost:
        """Least squares through (batch, context_tokens, ms) points, coefficients >= 0."""
        if not points:
            raise ValueError("no points to fit")
        rows = [[1.0, float(b), float(c)] for b, c, _ in points]
        base, per_seq, per_context = _solve_clamped(rows, [ms for _, _, ms in points])
        return cls(base, per_seq, per_context)


@dataclass(frozen=True)
class StepBudgets:
    """What one engine turn may take on besides its decodes."""

    max_num_batched_tokens: int  # prompt + decode tokens per engine step (prefill is chunked)
    max_encode_images: int  # images the vision tower encodes per turn (>= 1)


@dataclass(frozen=True)
class WorkerProfile:
    """A worker's measured costs, and the budgets it runs with. Crosses the process boundary
    in the answer to `load()`."""

    encode: LinearCost | None  # None: the worker does not encode
    prefill: LinearCost | None  # None: the worker does not prefill
    decode: DecodeCost | None  # None: the worker does not decode
    budgets: StepBudgets
    tpot_target_ms: float | None  # the target the budgets were derived from; None: config's
    image_tokens_per_image: int  # embedding rows one image becomes (0 without a vision tower)
    image_token_id: int | None  # the prompt's image placeholder id
    block_size: int  # tokens per KV block (to hash prompts as the worker does)
    profile_ms: float = 0.0  # how long profiling took
    # Decoding and resizing an encoded image costs by its pixels, beyond what its image tokens
    # cost (a 2400 x 1200 page and a 320 x 240 photo are both 16 tokens in the tiny preset, and
    # take 450 and 40 ms): ms per megapixel of the encoded images, on top of `encode`.
    encode_ms_per_megapixel: float = 0.0


def derive_budgets(
    prefill: LinearCost | None,
    decode: DecodeCost | None,
    encode: LinearCost | None,
    tpot_target_ms: float,
    image_tokens_per_image: int,
    reference_batch: int,
    reference_context: int,
    token_ceiling: int,
    token_floor: int,
    image_ceiling: int,
) -> StepBudgets:
    """Budgets that keep one turn (a decode step of `reference_batch` requests of
    `reference_context` tokens each, plus its prefill chunk or its encodes) within the TPOT
    target. The token budget stays in [token_floor, token_ceiling] and the image budget in
    [1, image_ceiling]: at least one image is encoded per turn, so encodes always make
    progress, and a cost fitted as free (slope 0) still gives a finite budget. A worker that
    does not decode has no TPOT to protect: it runs with the ceilings."""
    if decode is None:
        return StepBudgets(max_num_batched_tokens=token_ceiling, max_encode_images=image_ceiling)
    decode_ms = (
        decode.predict(reference_batch, reference_batch * reference_context) if decode else 0
    )
    room_ms = tpot_target_ms - decode_ms
    tokens = token_ceiling
    if prefill is not None:
        tokens = int(min(token_ceiling, prefill.max_units_within(room_ms)))
    images = 1
    if encode is not None and image_tokens_per_image > 0:
        images = int(min(image_ceiling, encode.max_units_within(room_ms) / image_tokens_per_image))
    return StepBudgets(
        max_num_batched_tokens=max(token_floor, tokens), max_encode_images=max(1, images)
    )


def _solve_clamped(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Least squares for non-negative coefficients: solve, then drop any negative coefficient
    (fix it at 0) and solve again on the rest."""
    active = list(range(len(rows[0])))
    while True:
        coefficients = [0.0] * len(rows[0])
        solved = _least_squares([[row[i] for i in active] for row in rows], ys)
        for i, value in zip(active, solved, strict=True):
            coefficients[i] = value
        negative = [i for i in active if coefficients[i] < 0]
        if not negative:
            break
        active = [i for i in active if i not in negative]
        if not active:
            coefficients = [0.0] * len(rows[0])
            break
    return coefficients


def _least_squares(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Normal equations, solved by Gaussian elimination; a singular column gets 0."""
    n = len(rows[0])
    if n == 0:
        return []
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            continue
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        for r in range(n):
            if r != col and a[r][col] != 0:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col], strict=True)]
                b[r] -= factor * b[col]
    return [b[i] / a[i][i] if abs(a[i][i]) >= 1e-12 else 0.0 for i in range(n)]
