"""What the scheduler learns from the workers' events: each worker's backlog, the cost model's
online corrections, cache hits, and every request's outcome against its SLO.

    dispatched    -> the worker's backlog grows by the job's predicted compute
    stage done    -> the backlog shrinks; observed / predicted compute corrects the cost model
    decode steps  -> step time against the batch it decoded corrects the decode cost
    transfer      -> bytes per embedding row or KV token, and the fetch bandwidth
    request ends  -> its TTFT, TPOT and attainment go into its trace (`slo`) and the ledger
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scheduler.active_request import ActiveRequest
from scheduler.cost_model import CostModel
from scheduler.lifecycle import RequestState
from scheduler.mode import SchedulingMode
from scheduler.slo import attains, tpot_ms
from scheduler.slo_ledger import RequestOutcome, SloLedger
from scheduler.stage import Stage
from scheduler.trace_events import EventName
from scheduler.worker_registry import OutstandingJob, WorkerSlot
from workers.contract.messages import WorkerEvents


class Feedback:
    def __init__(
        self,
        costs: CostModel,
        ledger: SloLedger,
        clock_ms: Callable[[], float],
        mode: SchedulingMode,  # gives prefills their priority
    ) -> None:
        self.mode = mode
        self.costs = costs
        self.ledger = ledger
        self.clock_ms = clock_ms

    def dispatched(
        self, slot: WorkerSlot, req: ActiveRequest, stage: Stage, predicted_ms: float
    ) -> None:
        if stage is Stage.DECODE:
            slot.decoding[req.job_id] = len(req.spec.prompt_token_ids)
        else:
            priority = (
                self.mode.prefill_priority(req.latest_start_ms) if stage is Stage.PREFILL else 0.0
            )
            job = OutstandingJob(
                stage=stage,
                predicted_ms=predicted_ms,
                dispatched_ms=self.clock_ms(),
                priority=priority,
            )
            slot.outstanding[(req.job_id, stage)] = job
        if stage is Stage.PREFILL and req.decode_here:
            slot.decoding[req.job_id] = len(req.spec.prompt_token_ids)

    def stage_done(self, slot: WorkerSlot, job_id: str, stage: Stage, compute_ms: float) -> None:
        job = slot.outstanding.pop((job_id, stage), None)
        costs = self.costs.get(slot.worker_id)
        if job is not None and costs is not None:
            costs.observe(stage, job.predicted_ms, compute_ms)

    def prefill_hits(self, req: ActiveRequest, num_cached_tokens: int) -> None:
        self.ledger.num_prompt_tokens += len(req.spec.prompt_token_ids)
        self.ledger.num_cached_prompt_tokens += num_cached_tokens

    def decode_steps(self, slot: WorkerSlot, events: WorkerEvents) -> None:
        """Steps that only decoded (no prefill finished in them) correct the decode cost."""
        costs = self.costs.get(slot.worker_id)
        if costs is None or not events.num_steps or not events.tokens or events.prefills:
            return
        if any(delta.num_cached_tokens is not None for delta in events.tokens):
            return  # a prefill's first token: the steps computed a prompt too
        batch = len(slot.decoding)
        if batch == 0:
            return
        context = sum(slot.decoding.values()) + batch * 16  # tokens generated: a rough guess
        predicted = costs.decode_step_ms(batch, context)
        costs.observe(Stage.DECODE, predicted, events.step_ms / events.num_steps)

    def transfer(self, req: ActiveRequest, kind: str, nbytes: int, fetch_ms: float) -> None:
        if req.shape is None:
            return
        if kind == "embedding":
            units = req.shape.image_tokens[0] if req.shape.image_tokens else 0
        else:
            units = req.shape.cost.num_prompt_tokens
        self.costs.transfers.observe(kind, nbytes, units, fetch_ms)

    def forget(self, job_id: str, slots: Iterable[WorkerSlot]) -> None:
        """The attempt ended or was superseded: it no longer loads these workers."""
        for slot in slots:
            slot.decoding.pop(job_id, None)
            for stage in (Stage.ENCODE, Stage.PREFILL):
                slot.outstanding.pop((job_id, stage), None)

    def first_token(self, req: ActiveRequest) -> None:
        """The request's first token went to the client: how far off was its TTFT forecast?"""
        first_tokens = [e for e in req.trace.events if e.name == EventName.FIRST_TOKEN]
        classified = req.trace.event(EventName.CLASSIFIED)
        if len(first_tokens) != 1 or classified is None:
            return  # a re-drive's first token, or an unclassified request
        predicted, measured = classified.attrs["model_ttft_ms"], first_tokens[0].time_ms
        self.costs.residuals.observe_ttft(req.request_class.value, predicted, measured)
        if req.targets is not None:
            attained = measured <= req.targets.ttft_ms
            self.costs.attainment.observe(req.request_class.value, attained)

    def ended(self, req: ActiveRequest, state: RequestState) -> RequestOutcome | None:
        """Record how the request did; the outcome of a finished one, else None."""
        counts = self.ledger.classes[req.request_class.value]
        if state is RequestState.CANCELLED:
            counts.num_cancelled += 1
            return None
        if state is not RequestState.FINISHED:
            counts.num_failed += 1
            return None
        first_token = req.trace.event(EventName.FIRST_TOKEN)
        e2e = self.clock_ms() - req.spec.arrival_time * 1000.0
        ttft = first_token.time_ms if first_token is not None else e2e
        num_tokens = len(req.stream.token_ids)
        tpot = tpot_ms(ttft, e2e, num_tokens)
        attained = req.targets is not None and attains(req.targets, ttft, tpot)
        outcome = RequestOutcome(
            request_id=req.request_id,
            request_class=req.request_class.value,
            ttft_ms=ttft,
            tpot_ms=tpot,
            e2e_ms=e2e,
            num_tokens=num_tokens,
            attained=attained,
        )
        self.ledger.finished(outcome)
        classified = req.trace.event(EventName.CLASSIFIED)
        if classified is not None and tpot is not None:
            predicted = classified.attrs["model_tpot_ms"]
            self.costs.residuals.observe_tpot(outcome.request_class, predicted, tpot)
        req.trace.record(
            EventName.SLO,
            request_class=outcome.request_class,
            ttft_ms=ttft,
            tpot_ms=tpot,
            attained=attained,
        )
        return outcome
