"""EngineJob: a prefill or decode job while its request is in the engine, as the stage runner
follows it, and the events that report it: its tokens, its hand-off, with its times (see
stage_timer.py for what each time covers)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.contract.messages import PrefillDone, TokenDelta, TransferRef
from workers.engine_interface import RequestProgress
from workers.engine_messages import StepOutput
from workers.stage_timer import StageTimer


@dataclass
class EngineJob:
    stage: str  # "prefill" or "decode": the stage its failures name
    request: RequestProgress  # the engine's live request (read, never changed)
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

    def decode_delta(self, out: StepOutput, step_ms: float) -> TokenDelta:
        """The tokens of one decode step (already counted in the timer)."""
        return TokenDelta(
            request_id=out.request_id,
            token_ids=out.new_token_ids,
            finish_reason=out.finish_reason,
            num_decode_steps=1,
            decode_compute_ms=step_ms,
            decode_queue_ms=self.timer.queue_ms if self.timer.num_steps == 1 else None,
        )

    def first_token_delta(self, out: StepOutput) -> TokenDelta:
        """A decode_here prefill's first token, with what a PrefillDone would carry."""
        return TokenDelta(
            request_id=out.request_id,
            token_ids=out.new_token_ids,
            finish_reason=out.finish_reason,
            num_cached_tokens=self.request.num_cached_tokens,
            prefill_queue_ms=self.timer.queue_ms,
            prefill_compute_ms=self.timer.compute_ms,
        )

    def prefill_done(self, out: StepOutput, kv: TransferRef | None, kv_dtype: str) -> PrefillDone:
        """An exporting prefill's first token; `kv` None: that token finished the request."""
        return PrefillDone(
            request_id=out.request_id,
            first_token_id=out.new_token_ids[0],
            finish_reason=out.finish_reason,
            kv=kv,
            kv_dtype=kv_dtype,
            image_spans=list(self.request.image_spans),
            num_cached_tokens=self.request.num_cached_tokens,
            queue_ms=self.timer.queue_ms,
            compute_ms=self.timer.compute_ms,
        )
