"""A request whose decode worker dies mid-stream resumes on another worker after the tokens the
client has: the client gets every token exactly once, as an uninterrupted run writes them.

The fake workers (fake_worker.py) check what a resumed job resumes after: a prefix that is not
the request's own tokens fails the request for good."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.errors import RequestFailedError
from scheduler.request import RequestOutput, Usage
from tests.scheduler.fake_worker import FakeWorker, expected_tokens
from tests.scheduler.harness import (
    Cluster,
    cluster,
    image,
    lifecycle_names,
    run,
    spec,
    token_ids,
    wait_until,
)
from workers.contract.messages import DecodeJob, PrefillJob

PROMPT = [1, 2, 3]


async def kill_after(c: Cluster, candidates: list[str], num_steps: int) -> FakeWorker:
    """The candidate (paused) that got the first job dies after `num_steps` more steps; every
    candidate resumes."""
    await wait_until(lambda: any(c[w].jobs for w in candidates), "a candidate has the job")
    doomed = next(c[w] for w in candidates if c[w].jobs)
    doomed.die_after_steps = doomed.num_steps + num_steps
    for worker_id in candidates:
        c[worker_id].resume()
    return doomed


def jobs_of(c: Cluster, kind: type) -> list:
    return [job for worker in c.workers.values() for job in worker.jobs if isinstance(job, kind)]


def test_lost_decode_worker_resumes_on_the_other_and_the_client_gets_each_token_once():
    async def body():
        async with cluster(p="P", d1="D", d2="D") as c:
            c["d1"].is_paused = c["d2"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", prompt=PROMPT, max_tokens=10))
            doomed = await kill_after(c, ["d1", "d2"], 3)
            received = [output async for output in outputs]

            expected = expected_tokens(PROMPT, [], 10)
            assert token_ids(received) == expected  # no gap, no duplicate
            assert received[-1].finish_reason == "length"
            assert received[-1].usage == Usage(3, 10, 0)
            # One from the prefill, three decode steps: then the worker was lost.
            resumed = [job for job in jobs_of(c, PrefillJob) if job.request_id == "r1~1"]
            assert [(job.prompt_token_ids, job.num_resumed_tokens) for job in resumed] == [
                (PROMPT + expected[:4], 4)
            ]
            [decode] = [job for job in jobs_of(c, DecodeJob) if job.request_id == "r1~1"]
            assert (decode.prompt_token_ids, decode.num_resumed_tokens) == (
                PROMPT + expected[:4],
                4,
            )
            assert decode.first_token_id == expected[4]
            survivor = "d2" if doomed is c["d1"] else "d1"
            assert [job.request_id for job in c[survivor].jobs] == ["r1~1"]
            trace = c.scheduler.trace("r1")
            names = lifecycle_names(trace)
            assert names[names.index("redrive") :] == [
                "redrive", "queued", "prefill_start", "first_token", "decode_start",
                "kv_transfer", "decode_steps", "finished",
            ]  # fmt: skip
            assert trace.event("redrive").attrs["resumed_tokens"] == 4
            assert trace.event("redrive").attrs["stage"] == "prefill"
            assert c.transport.arrays == {}

    run(body)


def test_lost_colocated_worker_resumes_on_another_that_decodes_it_too():
    async def body():
        async with cluster(pd1="PD", pd2="PD") as c:
            c["pd1"].is_paused = c["pd2"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", prompt=PROMPT, max_tokens=8))
            doomed = await kill_after(c, ["pd1", "pd2"], 5)
            received = [output async for output in outputs]

            assert token_ids(received) == expected_tokens(PROMPT, [], 8)
            [resumed] = [job for job in jobs_of(c, PrefillJob) if job.request_id == "r1~1"]
            assert resumed.decode_here and resumed.num_resumed_tokens == 5
            assert resumed not in doomed.jobs

    run(body)


def test_lost_decode_worker_of_an_image_request_resumes_with_its_images():
    async def body():
        async with cluster(e="E", p="P", d1="D", d2="D") as c:
            c["d1"].is_paused = c["d2"].is_paused = True
            request = spec("r1", prompt=PROMPT, images=[image("cat")], max_tokens=9)
            outputs = await c.scheduler.generate(request)
            await kill_after(c, ["d1", "d2"], 2)
            received = [output async for output in outputs]

            expected = expected_tokens(PROMPT, [image("cat")], 9)
            assert token_ids(received) == expected
            [resumed] = [job for job in jobs_of(c, PrefillJob) if job.request_id == "r1~1"]
            assert resumed.prompt_token_ids == PROMPT + expected[:3]
            assert len(resumed.images) == 1

    run(body)


def test_redrives_mid_decode_stay_bounded_by_max_retries():
    async def body():
        config = SchedulerConfig(max_retries=1)
        async with cluster(config, p="P", d1="D", d2="D") as c:
            c["d1"].die_after_steps = c["d2"].die_after_steps = 2
            outputs = await c.scheduler.generate(spec("r1", prompt=PROMPT, max_tokens=20))
            received: list[RequestOutput] = []
            with pytest.raises(
                RequestFailedError, match="decode failed after 1 re-drives: decode worker lost"
            ):
                async for output in outputs:
                    received.append(output)

            streamed = token_ids(received)
            assert streamed == expected_tokens(PROMPT, [], len(streamed))
            assert len(streamed) > 3  # the re-drive streamed on after the first loss

    run(body)
