"""Forecasts from the cost model: when would a stage finish on each worker, and when would a
request's first token come out.

For one stage on one worker (all in ms from now):

    completion = max(backlog, inputs ready + transfer) + compute
        backlog  = predicted work the worker already holds (dispatched, not yet done)
        compute  = the stage's cost on that worker, less what its caches already hold:
                   encode skips cached images; prefill skips the leading prompt blocks it holds
        transfer = moving embeddings (prefill) or KV (decode) from another worker; 0 on the same

A request's first token: encode on its best worker, then prefill on the worker that would then
finish first, with the predicted work queued ahead of it in each stage spread over that stage's
workers. Its first inter-token gap: the KV transfer plus one decode step of the batch it joins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.cache_directory import CacheDirectory
from scheduler.cost_model import CostModel
from scheduler.request_class import RequestCost
from scheduler.stage import Stage


@dataclass(frozen=True)
class WorkerLoadView:
    """What forecasting needs of one worker, beyond its costs."""

    worker_id: str
    backlog_ms: float  # predicted encode and prefill work already given to it
    num_decoding: int  # requests in its decode batch (reported, plus dispatched since)
    decode_context_tokens: int  # their summed context, as far as the scheduler knows


@dataclass(frozen=True)
class RequestShape:
    """What forecasting needs of one request."""

    cost: RequestCost
    image_hashes: tuple[str, ...]
    image_tokens: tuple[int, ...]  # embedding rows per image, in image order
    block_hashes: tuple[str, ...]  # hex, of the prompt's full blocks
    block_size: int
    image_pixels: tuple[int, ...] = ()  # width x height of each image as sent, in image order


@dataclass(frozen=True)
class StageForecast:
    stage: Stage
    worker_id: str
    completion_ms: float  # from now
    compute_ms: float
    transfer_ms: float
    num_cached: int  # encode: images served from its embedding cache; prefill: cached tokens


@dataclass(frozen=True)
class FirstTokenForecast:
    ttft_ms: float  # from now
    first_gap_ms: float  # KV transfer + one decode step
    stages: tuple[StageForecast, ...]


class Forecaster:
    """`loads(worker_id, prefill_priority)`: the worker's load as a job sees it; for a prefill
    of a given priority, only the work the worker will run before it (None: all of it)."""

    def __init__(
        self,
        costs: CostModel,
        caches: CacheDirectory,
        loads: Callable[[str, float | None], WorkerLoadView],
    ) -> None:
        self.costs = costs
        self.caches = caches
        self._load = loads

    def encode(self, shape: RequestShape, worker_id: str, ready_ms: float = 0.0) -> StageForecast:
        held = [self.caches.holds_embeddings(worker_id, [h]) for h in shape.image_hashes]
        tokens = sum(n for n, is_held in zip(shape.image_tokens, held, strict=True) if not is_held)
        pixels = sum(n for n, is_held in zip(shape.image_pixels, held) if not is_held)  # noqa: B905
        compute = self.costs[worker_id].encode_ms(tokens, pixels)
        start = max(self._load(worker_id, None).backlog_ms, ready_ms)
        return StageForecast(Stage.ENCODE, worker_id, start + compute, compute, 0.0, sum(held))

    def prefill(
        self,
        shape: RequestShape,
        worker_id: str,
        encode_worker: str | None = None,
        ready_ms: float = 0.0,
        priority: float | None = None,
    ) -> StageForecast:
        """`encode_worker`: where the embeddings are (None: no images, or already here);
        `ready_ms`: when they will be there; `priority`: the PrefillJob's."""
        num_prompt = shape.cost.num_prompt_tokens
        matched = self.caches.num_matching_blocks(worker_id, shape.block_hashes)
        cached = min(matched * shape.block_size, max(0, num_prompt - 1))
        compute = self.costs[worker_id].prefill_ms(num_prompt - cached)
        moves = encode_worker is not None and encode_worker != worker_id
        transfer = self.costs.transfers.embedding_ms(shape.cost.num_image_tokens) if moves else 0.0
        start = max(self._load(worker_id, priority).backlog_ms, ready_ms + transfer)
        return StageForecast(Stage.PREFILL, worker_id, start + compute, compute, transfer, cached)

    def decode(self, shape: RequestShape, worker_id: str, prefill_worker: str | None):
        """The first decode step of this request on `worker_id`, joining its batch."""
        load = self._load(worker_id, None)
        context = load.decode_context_tokens + shape.cost.num_prompt_tokens
        step = self.costs[worker_id].decode_step_ms(load.num_decoding + 1, context)
        moves = prefill_worker is not None and prefill_worker != worker_id
        transfer = self.costs.transfers.kv_ms(shape.cost.num_prompt_tokens) if moves else 0.0
        return StageForecast(Stage.DECODE, worker_id, transfer + step, step, transfer, 0)

    def stage(
        self,
        stage: Stage,
        shape: RequestShape,
        worker_id: str,
        previous: str | None,
        priority: float | None = None,
    ) -> StageForecast:
        """`stage` on `worker_id`, its inputs coming from `previous` (None: no transfer)."""
        if stage is Stage.ENCODE:
            return self.encode(shape, worker_id)
        if stage is Stage.PREFILL:
            return self.prefill(shape, worker_id, previous, priority=priority)
        return self.decode(shape, worker_id, previous)

    def first_token(
        self,
        shape: RequestShape,
        encoders: Sequence[str],
        prefillers: Sequence[str],
        decoders: Sequence[str],
        work_ahead_ms: dict[Stage, float],
        priority: float | None = None,
    ) -> FirstTokenForecast | None:
        """The best plan over the given workers (None when a needed stage has none).
        `work_ahead_ms`: queued work that would run before this request, per stage;
        `priority`: its PrefillJob's (None: every prefill on a worker is ahead of it)."""
        if not prefillers or not decoders or (shape.image_hashes and not encoders):
            return None
        stages: list[StageForecast] = []
        encode = None
        if shape.image_hashes:
            ahead = work_ahead_ms.get(Stage.ENCODE, 0.0) / len(encoders)
            encode = min(
                (self.encode(shape, w, ahead) for w in encoders),
                key=lambda f: (f.completion_ms, f.worker_id),
            )
            stages.append(encode)
        ahead = work_ahead_ms.get(Stage.PREFILL, 0.0) / len(prefillers)
        encode_worker = encode.worker_id if encode else None
        ready = encode.completion_ms if encode else 0.0
        prefill = min(
            (
                self.prefill(shape, w, encode_worker, max(ready, ahead), priority)
                for w in prefillers
            ),
            key=lambda f: (f.completion_ms, f.worker_id),
        )
        stages.append(prefill)
        decode = min(
            (self.decode(shape, w, prefill.worker_id) for w in decoders),
            key=lambda f: (f.completion_ms, f.worker_id),
        )
        stages.append(decode)
        return FirstTokenForecast(prefill.completion_ms, decode.completion_ms, tuple(stages))
