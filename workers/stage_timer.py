"""Where one request's time goes on a worker: waiting for the engine, fetching, computing.

    arrival          first step            later steps ...
       |--- queue ---|=== step ===|  gap  |=== step ===|        (fetches are not queue:
       |  (- fetch)  |                                            they are reported apart)
                     <----- compute_ms: the full time of each step that computed it ---->

A step computes the whole batch, so every request in it is charged the full step time; the
gaps between steps (an encode on the same thread, publishing events) are nobody's compute.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StageTimer:
    """One stage (prefill or decode) of one request on this worker."""

    arrival: float  # clock seconds when the request became ready for this stage here
    fetch_ms: float = 0.0  # fetching its inputs from the transport (TransferConsumed.fetch_ms)
    first_step_start: float | None = None  # clock seconds; None until a step computes it
    compute_ms: float = 0.0
    num_steps: int = 0  # steps that computed it

    def count_step(self, start: float, step_ms: float) -> None:
        if self.first_step_start is None:
            self.first_step_start = start
        self.compute_ms += step_ms
        self.num_steps += 1

    @property
    def queue_ms(self) -> float:
        """Arrival -> the first step that computed it, less the fetches (0 before that step)."""
        if self.first_step_start is None:
            return 0.0
        return max(0.0, (self.first_step_start - self.arrival) * 1e3 - self.fetch_ms)
