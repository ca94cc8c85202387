"""A worker whose poll fails is suspected, not dropped: it gets no new work, its requests fail
over at once, and it is taken back when it answers again (poller.py). Only a worker silent for
`worker_suspect_timeout_s` is dropped."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.errors import NoWorkerAvailableError
from tests.scheduler.fake_worker import expected_tokens
from tests.scheduler.harness import cluster, image, run, spec, token_ids, wait_until


def test_suspected_worker_gets_no_new_work_while_its_request_moves_on():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await wait_until(lambda: len(c["p1"].jobs) == 1, "p1 has the prefill")
            c["p1"].die()
            received = [output async for output in outputs]
            second = await c.generate(spec("r2", prompt=[4, 5], max_tokens=3))

            assert token_ids(received) == expected_tokens([1, 2, 3], [], 4)
            assert token_ids(second) == expected_tokens([4, 5], [], 3)
            assert [job.request_id for job in c["p1"].jobs] == ["r1"]
            assert [job.request_id for job in c["p2"].jobs] == ["r1~1", "r2"]
            assert c.scheduler.snapshot().workers["p1"].is_suspected

    run(body)


def test_worker_that_answers_again_with_its_epoch_is_told_what_it_missed_and_used_again():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await wait_until(lambda: len(c["p1"].jobs) == 1, "p1 has the prefill")
            c["p1"].die()
            assert len([output async for output in outputs]) == 4  # finished on p2
            assert c["p1"].aborted == []  # deferred: p1 is not called while suspected

            c["p1"].is_dead = False
            c["p1"].resume()
            await wait_until(
                lambda: not c.scheduler.snapshot().workers["p1"].is_suspected, "p1 is back"
            )
            await c.scheduler.remove_worker("p2")
            again = await c.generate(spec("r2", prompt=[4, 5], max_tokens=3))

            assert c["p1"].aborted == ["r1"]  # the job it held from before
            assert token_ids(again) == expected_tokens([4, 5], [], 3)
            assert [job.request_id for job in c["p1"].jobs] == ["r1", "r2"]

    run(body)


def test_restarted_worker_is_taken_back_with_the_caches_its_new_process_reports():
    async def body():
        async with cluster(e="E", p="P", d="D") as c:
            cat, dog = image("cat"), image("dog")
            # As if e had reported caching the cat (fake workers report no cache deltas).
            c.scheduler.caches.apply(
                "e", [], [], embeddings_added=[cat.image_hash], embeddings_removed=[]
            )

            c["e"].die()
            await wait_until(lambda: c.scheduler.snapshot().workers["e"].is_suspected, "suspect")
            c["e"].restart()
            c["e"]._embedding_cache[dog.image_hash] = 7  # what its new process already holds
            c["e"].is_dead = False
            await wait_until(lambda: c.scheduler.snapshot().workers["e"].epoch == 1, "taken back")
            again = await c.generate(spec("r1", images=[cat], max_tokens=2))

            worker = c.scheduler.snapshot().workers["e"]
            assert worker.is_suspected is False
            assert c.scheduler.caches.holds_embeddings("e", [dog.image_hash])
            assert token_ids(again) == expected_tokens([1, 2, 3], [cat], 2)
            assert [job.request_id for job in c["e"].jobs] == ["r1"]  # encoded, not skipped

    run(body)


def test_worker_silent_past_the_suspect_timeout_is_dropped():
    async def body():
        config = SchedulerConfig(worker_suspect_timeout_s=0.2)
        async with cluster(config, p="P", d="D") as c:
            c["d"].die()
            await wait_until(lambda: "d" not in c.scheduler.snapshot().workers, "d is dropped")

            assert sorted(c.scheduler.snapshot().workers) == ["p"]

    run(body)


def test_request_whose_only_worker_is_suspected_is_refused_at_once():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["d"].die()
            await wait_until(lambda: c.scheduler.snapshot().workers["d"].is_suspected, "suspect")

            with pytest.raises(NoWorkerAvailableError):
                await c.generate(spec("r1"))

    run(body)
