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

from workers.engine.request import Request


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


@dataclass
class EngineJob:
    """A prefill or decode job whose request is in the engine, as the stage runner follows it."""

    stage: str  # "prefill" or "decode": the stage its failures name
    request: Request  # the engine's live request (read, never changed)
    is_export: bool  # its KV leaves with a PrefillDone after the first token
    timer: StageTimer  # of the phase it is in: prefill until its first token, then decode
    is_decoding: bool = False  # its first token is out (a DecodeJob starts out decoding)
    num_computed_before_step: int = 0  # request.num_computed_tokens when the step started

    def note_step_start(self) -> None:
        self.num_computed_before_step = self.request.num_computed_tokens

    def has_prefilled_in_step(self) -> bool:
        """Whether the last step computed some of its prompt. A prefill chunk samples nothing,
        so only its counter tells; a preemption in the step sets the counter back to 0."""
        return not self.is_decoding and self.request.num_computed_tokens > (
            self.num_computed_before_step
        )
