"""Paused KV (sessions) through a worker: a job with a pause plan is reported paused when it
ends, a continuation reports the pause released as "resumed" and reuses its KV, a worker
without the P stage takes a continuation of KV paused on it, and a paused request's blocks go
on `release_paused` or, on an idle worker, when its TTL runs out."""

from __future__ import annotations

import asyncio

import pytest

from tests.workers.support import (
    GREEDY,
    ImageRequest,
    colocated_tokens,
    finish_reason,
    has,
    is_finished,
    poll_until,
    token_ids,
)
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import (
    DecodeJob,
    EncodeJob,
    PausedKV,
    PausePlan,
    PrefillJob,
    WorkerEvents,
)
from workers.contract.worker_config import WorkerConfig
from workers.job_stages import refusal
from workers.local_client import LocalWorkerClient

PLAN = PausePlan(ttl_s=600.0, expected_pause_s=5.0)
PROMPT = list(range(5, 35))  # 30 tokens: with 7 of the 8 outputs, 37 kept: 3 blocks


def text_job(request_id: str, prompt: list[int], **session) -> PrefillJob:
    return PrefillJob(
        request_id=request_id,
        prompt_token_ids=prompt,
        sampling_params=GREEDY,
        images=[],
        decode_here=True,
        **session,
    )


def paused(seen: list[WorkerEvents]) -> list[PausedKV]:
    return [p for events in seen for p in events.paused]


def released(seen: list[WorkerEvents]) -> list[tuple[str, str]]:
    return [(r.request_id, r.reason) for events in seen for r in events.pauses_released]


def num_cached_tokens(seen: list[WorkerEvents], request_id: str) -> int | None:
    deltas = [d for events in seen for d in events.tokens if d.request_id == request_id]
    return next(d.num_cached_tokens for d in deltas if d.num_cached_tokens is not None)


def test_local_client_reports_pause_resume_and_release(tiny_model_dir, transport):
    async def run() -> None:
        config = WorkerConfig(
            worker_id="epd-0",
            engine=EngineConfig(model_dir=str(tiny_model_dir), num_kv_blocks=32),
        )
        client = await LocalWorkerClient.start(config, transport)

        async def poll_until_done(check) -> list[WorkerEvents]:
            seen: list[WorkerEvents] = []
            while not check(seen):
                seen.append(await client.poll(5.0))
            return seen

        await client.submit_prefill(text_job("t0", PROMPT, pause=PLAN))
        seen = await poll_until_done(is_finished("t0"))
        answer = token_ids(seen, "t0")
        assert finish_reason(seen, "t0") == "length"
        assert paused(seen) == [PausedKV(request_id="t0", num_tokens=37, num_blocks=3)]
        load = await client.load()
        assert (load.num_paused, load.num_pinned_blocks, load.num_kv_blocks_used) == (1, 3, 3)

        prompt = PROMPT + answer + [40, 41, 42]
        await client.submit_prefill(text_job("t1", prompt, pause=PLAN, resume_from="t0"))
        seen = await poll_until_done(is_finished("t1"))
        assert released(seen) == [("t0", "resumed")]
        assert num_cached_tokens(seen, "t1") == 37
        assert paused(seen) == [PausedKV(request_id="t1", num_tokens=48, num_blocks=3)]

        await client.release_paused(["t1", "never-paused"])
        seen = await poll_until_done(lambda seen: released(seen))
        assert released(seen) == [("t1", "released")]
        load = await client.load()
        assert (load.num_paused, load.num_pinned_blocks, load.num_kv_blocks_used) == (0, 0, 0)
        await client.stop()

    asyncio.run(asyncio.wait_for(run(), timeout=60))


def test_a_worker_without_prefill_continues_kv_paused_on_it(start_worker, cat_request):
    encoder, prefiller, decoder = (
        start_worker("e-0", "E"), start_worker("p-0", "P"), start_worker("d-0", "D")
    )  # fmt: skip
    encoder.submit_encode(cat_request.encode_job("t0"))
    [encoded] = [d for events in poll_until(encoder.poll, has("encodes")) for d in events.encodes]
    prompt = cat_request.prompt_token_ids
    job = PrefillJob(
        request_id="t0",
        prompt_token_ids=prompt,
        sampling_params=GREEDY,
        images=encoded.embeddings,
        decode_here=False,
        expected_epochs={"e-0": encoder.epoch},
    )
    prefiller.submit_prefill(job)
    [prefill] = [
        d for events in poll_until(prefiller.poll, has("prefills")) for d in events.prefills
    ]
    decoder.submit_decode(
        DecodeJob(
            request_id="t0",
            prompt_token_ids=prompt,
            sampling_params=GREEDY,
            first_token_id=prefill.first_token_id,
            image_spans=prefill.image_spans,
            kv=prefill.kv,
            kv_dtype=prefill.kv_dtype,
            expected_epochs={"p-0": prefiller.epoch},
            pause=PLAN,
        )
    )
    seen = poll_until(decoder.poll, is_finished("t0"))
    answer = [prefill.first_token_id, *token_ids(seen, "t0")]
    num_kept = len(prompt) + GREEDY.max_tokens - 1
    assert paused(seen) == [PausedKV(request_id="t0", num_tokens=num_kept, num_blocks=3)]

    # The image's embeddings again, as a continuation's prefill takes them.
    encoder.submit_encode(EncodeJob(request_id="t1", images=[cat_request.image]))
    [again] = [d for events in poll_until(encoder.poll, has("encodes")) for d in events.encodes]
    continuation = replace_job(job, "t1", prompt + answer + [40, 41], again.embeddings)
    decoder.submit_prefill(continuation)
    seen = poll_until(decoder.poll, is_finished("t1"))
    assert not [f for events in seen for f in events.failures]
    assert released(seen) == [("t0", "resumed")]
    assert num_cached_tokens(seen, "t1") == num_kept
    colocated = start_worker("epd-0", "EPD")
    plain = ImageRequest(continuation.prompt_token_ids, cat_request.image)
    assert token_ids(seen, "t1") == colocated_tokens(colocated, plain, "plain")
    assert decoder.load().num_kv_blocks_used == 0


def replace_job(job: PrefillJob, request_id: str, prompt: list[int], images) -> PrefillJob:
    return PrefillJob(
        request_id=request_id,
        prompt_token_ids=prompt,
        sampling_params=job.sampling_params,
        images=images,
        decode_here=True,
        expected_epochs=job.expected_epochs,
        resume_from=job.request_id,
    )


def test_an_idle_worker_releases_paused_kv_when_its_ttl_runs_out(start_worker):
    worker = start_worker("epd-0", "EPD")
    worker.submit_prefill(text_job("t0", PROMPT, pause=PausePlan(ttl_s=0.2, expected_pause_s=0)))
    seen = poll_until(worker.poll, is_finished("t0"))
    seen += poll_until(worker.poll, lambda more: released(more), deadline_s=10.0)
    assert released(seen) == [("t0", "expired")]
    load = worker.load()
    assert (load.num_paused, load.num_pinned_blocks, load.num_kv_blocks_used) == (0, 0, 0)


@pytest.mark.parametrize(
    "stages, job, reason",
    [
        ("D", text_job("r", PROMPT, resume_from="t0"), None),
        ("D", text_job("r", PROMPT), "w runs D, not prefill"),
        ("P", text_job("r", PROMPT, resume_from="t0"), "w runs P: it cannot decode here"),
        ("PD", text_job("r", PROMPT, resume_from="t0"), None),
    ],
)
def test_only_a_continuation_that_decodes_here_skips_the_prefill_stage(stages, job, reason):
    assert refusal("w", stages, job) == reason
