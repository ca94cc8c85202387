"""Summaries of samples. Pure numpy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def percentiles(
    values: Iterable[float | None], points: Sequence[int] = (50, 90, 99)
) -> dict[str, float | None]:
    """The mean and the percentiles `points` (numpy's linear interpolation between samples) of
    the values that are not None; every figure None when there are none."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if array.size == 0:
        return {"mean": None, **{f"p{p}": None for p in points}}
    return {
        "mean": float(array.mean()),
        **{f"p{p}": float(np.percentile(array, p)) for p in points},
    }
