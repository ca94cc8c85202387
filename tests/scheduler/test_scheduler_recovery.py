"""Cancellation, failed stages and lost workers: every block is freed, and the client never
sees a duplicate, a missing or a wrong token."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.errors import RequestFailedError
from scheduler.request import RequestOutput, Usage
from tests.scheduler.fake_worker import expected_tokens
from tests.scheduler.harness import (
    cluster,
    image,
    lifecycle_names,
    run,
    spec,
    token_ids,
    wait_until,
)
from workers.contract.errors import InvalidRequestError
from workers.contract.messages import PrefillJob


def test_cancel_aborts_on_every_worker_the_request_touched_and_ends_with_abort():
    async def body():
        async with cluster(e="E", p="P", d="D") as c:
            outputs = await c.scheduler.generate(
                spec("r1", images=[image("cat")], max_tokens=10_000)
            )
            received = [await anext(outputs) for _ in range(3)]

            assert await c.scheduler.cancel("r1") is True
            received += [output async for output in outputs]
            assert received[-1] == RequestOutput(
                "r1", [], "abort", Usage(3, len(token_ids(received)), 0)
            )
            expected = expected_tokens([1, 2, 3], [image("cat")], 10_000)
            assert token_ids(received) == expected[: len(token_ids(received))]
            assert (c["e"].aborted, c["p"].aborted, c["d"].aborted) == (["r1"], ["r1"], ["r1"])
            assert (await c["d"].load()).num_running == 0
            assert c.transport.arrays == {}
            assert c.scheduler.trace("r1").names[-1] == "cancelled"
            assert await c.scheduler.cancel("r1") is False

    run(body)


def test_client_leaving_early_cancels_the_request():
    async def body():
        async with cluster(p="P", d="D") as c:
            outputs = await c.scheduler.generate(spec("r1", max_tokens=10_000))
            await anext(outputs)
            await outputs.aclose()

            assert (c["p"].aborted, c["d"].aborted) == (["r1"], ["r1"])
            assert c.scheduler.snapshot().num_requests_by_state["cancelled"] == 1

    run(body)


def test_failed_kv_import_reruns_prefill_and_the_client_sees_each_token_once():
    async def body():
        async with cluster(p="P", d="D") as c:
            c.transport.num_to_corrupt["kv"] = 1
            outputs = await c.generate(spec("r1", prompt=[1, 2, 3], max_tokens=4))

            assert outputs == [
                RequestOutput("r1", [6]),
                RequestOutput("r1", [7]),
                RequestOutput("r1", [8]),
                RequestOutput("r1", [9], "length", Usage(3, 4, 0)),
            ]
            assert [job.request_id for job in c["p"].jobs] == ["r1", "r1~1"]
            assert [job.request_id for job in c["d"].jobs] == ["r1", "r1~1"]
            assert (c["p"].aborted, c["d"].aborted) == (["r1"], ["r1"])
            assert c["p"].released == ["p/kv0", "p/kv1"]  # the corrupt KV is freed too
            assert c.transport.arrays == {}
            trace = c.scheduler.trace("r1")
            assert lifecycle_names(trace) == [
                "queued", "prefill_start", "first_token", "decode_start", "redrive", "queued",
                "prefill_start", "first_token", "decode_start", "kv_transfer", "decode_steps",
                "finished",
            ]  # fmt: skip
            assert trace.event("redrive").attrs["stage"] == "prefill"
            assert "p/kv0 is missing or corrupt (on d)" in trace.event("redrive").attrs["reason"]

    run(body)


def test_failed_kv_import_reprefills_on_the_encode_worker_without_encoding_again():
    async def body():
        async with cluster(ep="EP", d="D") as c:
            c.transport.num_to_corrupt["kv"] = 1
            outputs = await c.generate(spec("r1", images=[image("cat")], max_tokens=4))

            assert token_ids(outputs) == expected_tokens([1, 2, 3], [image("cat")], 4)
            assert c["ep"].calls.count("submit_encode") == 1
            prefills = [job for job in c["ep"].jobs if isinstance(job, PrefillJob)]
            assert [(job.request_id, job.images[0].ref) for job in prefills] == [
                ("r1", None),
                ("r1~1", None),
            ]  # both read the worker's own embedding cache
            assert c.transport.arrays == {}

    run(body)


def test_prefill_that_cannot_follow_encode_onto_its_worker_encodes_again_and_exports():
    async def body():
        async with cluster(a="EP", b="E", c="P", d="D") as c:
            c["a"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", images=[image("cat")], max_tokens=4))
            await wait_until(lambda: len(c["a"].jobs) == 1, "a has the encode")
            c.scheduler.set_draining("a")  # so prefill goes to c, which cannot read a's cache
            c["a"].resume()
            received = [output async for output in outputs]

            assert token_ids(received) == expected_tokens([1, 2, 3], [image("cat")], 4)
            assert [(job.request_id, job.export) for job in c["a"].jobs] == [("r1", False)]
            assert [(job.request_id, job.export) for job in c["b"].jobs] == [("r1~1", True)]
            assert [job.request_id for job in c["c"].jobs] == ["r1~1"]
            trace = c.scheduler.trace("r1")
            redrive = trace.event("redrive").attrs
            assert (redrive["stage"], redrive["reason"]) == (
                "encode", "prefill: the image embeddings are no longer reachable",
            )  # fmt: skip
            assert trace.names.count("embedding_transfer") == 1
            assert c.transport.arrays == {}

    run(body)


def test_corrupt_embedding_transfer_reruns_encode():
    async def body():
        async with cluster(e="E", p="P", d="D") as c:
            c.transport.num_to_corrupt["emb"] = 1
            outputs = await c.generate(spec("r1", images=[image("cat")], max_tokens=4))

            assert token_ids(outputs) == expected_tokens([1, 2, 3], [image("cat")], 4)
            assert [job.request_id for job in c["e"].jobs] == ["r1", "r1~1"]
            assert c["e"].released == ["e/emb0", "e/emb1"]
            assert c.scheduler.trace("r1").event("redrive").attrs["stage"] == "encode"
            assert c.transport.arrays == {}

    run(body)


def test_request_fails_clearly_when_its_redrives_run_out():
    async def body():
        async with cluster(SchedulerConfig(max_retries=2), p="P", d="D") as c:
            c.transport.num_to_corrupt["kv"] = 100
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            received = []
            with pytest.raises(RequestFailedError, match="decode failed after 2 re-drives"):
                async for output in outputs:
                    received.append(output)

            # Each re-drive resumes after the tokens streamed, and its prefill writes the next.
            assert token_ids(received) == [6, 7, 8]
            assert [job.num_resumed_tokens for job in c["p"].jobs] == [0, 1, 2]
            assert c.transport.arrays == {}
            assert c.scheduler.trace("r1").names[-1] == "failed"

    run(body)


def test_stage_that_fails_for_good_fails_the_request_without_a_redrive(caplog):
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].broken_reason = "KV of another layout"
            with pytest.raises(RequestFailedError, match="^request 'r1': prefill failed: internal"):
                await c.generate(spec("r1"))

            assert [job.request_id for job in c["p"].jobs] == ["r1"]
            assert c["p"].aborted == ["r1"]
            assert lifecycle_names(c.scheduler.trace("r1")) == ["queued", "prefill_start", "failed"]
            assert "KV of another layout (on p)" in caplog.text  # for operators, not clients

    run(body)


def test_input_a_stage_finds_invalid_fails_the_request_as_invalid_input():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].bad_input_reason = "image hash does not match its pixels"
            with pytest.raises(InvalidRequestError) as failure:
                await c.generate(spec("r1"))

            assert not isinstance(failure.value, RequestFailedError)
            assert str(failure.value) == "request 'r1': image hash does not match its pixels"
            assert [job.request_id for job in c["p"].jobs] == ["r1"]  # no re-drive
            assert c["p"].aborted == ["r1"]
            trace = c.scheduler.trace("r1")
            assert lifecycle_names(trace) == ["queued", "prefill_start", "failed"]
            assert trace.event("failed").attrs == {"reason": str(failure.value)}

    run(body)


def test_dead_prefill_workers_request_is_redriven_on_another_with_the_same_embeddings():
    async def body():
        async with cluster(e="E", p1="P", p2="P", d="D") as c:
            c["p1"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", images=[image("cat")], max_tokens=4))
            await wait_until(lambda: len(c["p1"].jobs) == 1, "p1 has the prefill")
            c["p1"].die()
            received = [output async for output in outputs]

            assert token_ids(received) == expected_tokens([1, 2, 3], [image("cat")], 4)
            assert [job.request_id for job in c["p2"].jobs] == ["r1~1"]
            assert c["p2"].jobs[0].images == c["p1"].jobs[0].images  # the same refs, re-routed
            assert len(c["e"].jobs) == 1
            assert c.scheduler.snapshot().workers["p1"].is_suspected  # until it answers
            assert (
                "worker p1 failed to poll"
                in c.scheduler.trace("r1").event("redrive").attrs["reason"]
            )
            assert c.transport.arrays == {}

    run(body)


def test_restarted_workers_requests_are_redriven():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await wait_until(lambda: len(c["p"].jobs) == 1, "p has the prefill")
            c["p"].restart()
            received = [output async for output in outputs]

            assert token_ids(received) == expected_tokens([1, 2, 3], [], 4)
            assert [job.request_id for job in c["p"].jobs] == ["r1", "r1~1"]
            assert c["d"].jobs[0].expected_epochs == {"p": 1}
            reason = c.scheduler.trace("r1").event("redrive").attrs["reason"]
            assert "restarted (epoch 0 -> 1)" in reason

    run(body)


def test_removed_workers_request_moves_to_another_worker():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await c.scheduler.remove_worker("p1")
            received = [output async for output in outputs]

            assert token_ids(received) == expected_tokens([1, 2, 3], [], 4)
            assert [job.request_id for job in c["p2"].jobs] == ["r1~1"]
            assert c["p1"].aborted == []  # no longer ours to call
            assert sorted(c.scheduler.snapshot().workers) == ["d", "p2"]

    run(body)


def test_worker_that_fails_a_submit_is_dropped_and_its_request_redriven():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].refuse_with = ConnectionError("actor died")
            outputs = await c.generate(spec("r1", max_tokens=4))

            assert token_ids(outputs) == expected_tokens([1, 2, 3], [], 4)
            assert [job.request_id for job in c["p2"].jobs] == ["r1~1"]
            assert sorted(c.scheduler.snapshot().workers) == ["d", "p2"]

    run(body)


def test_input_a_worker_refuses_fails_only_that_request():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].refuse_with = InvalidRequestError("prompt of 3 tokens does not fit")
            with pytest.raises(InvalidRequestError, match="does not fit"):
                await c.generate(spec("r1"))
            c["p"].refuse_with = None

            assert len(await c.generate(spec("r2"))) == 4
            assert sorted(c.scheduler.snapshot().workers) == ["d", "p"]

    run(body)
