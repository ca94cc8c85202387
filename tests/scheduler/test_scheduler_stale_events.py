"""Events of an attempt that ended or was re-driven while they were in flight: the arrays they
carry are freed, so no producer holds them forever."""

from __future__ import annotations

from tests.scheduler.fake_worker import expected_tokens
from tests.scheduler.harness import cluster, collect, image, run, spec, token_ids, wait_until


def test_kv_of_a_request_cancelled_while_its_prefill_done_was_in_flight_is_freed():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].hold("prefills")
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await wait_until(c["p"].is_holding.is_set, "p's PrefillDone is in flight")
            assert list(c.transport.arrays) == ["p/kv0"]

            assert await c.scheduler.cancel("r1") is True
            c["p"].unhold()
            await wait_until(lambda: c.transport.arrays == {}, "p freed the KV")

            assert c["p"].released == ["p/kv0"]
            assert c["d"].jobs == []
            assert [output.finish_reason for output in await collect(outputs)] == ["abort"]

    run(body)


def test_embeddings_of_a_request_cancelled_while_its_encode_done_was_in_flight_are_freed():
    async def body():
        async with cluster(e="E", p="P", d="D") as c:
            c["e"].hold("encodes")
            await c.scheduler.generate(spec("r1", images=[image("cat"), image("dog")]))
            await wait_until(c["e"].is_holding.is_set, "e's EncodeDone is in flight")
            assert sorted(c.transport.arrays) == ["e/emb0", "e/emb1"]

            assert await c.scheduler.cancel("r1") is True
            c["e"].unhold()
            await wait_until(lambda: c.transport.arrays == {}, "e freed the embeddings")

            assert sorted(c["e"].released) == ["e/emb0", "e/emb1"]
            assert c["p"].jobs == []

    run(body)


def test_kv_of_an_attempt_redriven_while_its_prefill_done_was_in_flight_is_freed():
    async def body():
        async with cluster(e1="E", e2="E", p="P", d="D") as c:
            c["p"].hold("prefills")
            request = spec("r1", images=[image("cat")], max_tokens=4)
            outputs = await c.scheduler.generate(request)
            await wait_until(c["p"].is_holding.is_set, "p's PrefillDone is in flight")
            # The scheduler has not heard that p imported e1's embeddings: losing e1 re-drives
            # the request from encode, on e2, while p's PrefillDone of attempt 0 is on its way.
            await c.scheduler.remove_worker("e1")
            await wait_until(lambda: len(c["e2"].jobs) == 1, "e2 encodes attempt 1")
            c["p"].unhold()

            assert token_ids(await collect(outputs)) == expected_tokens(
                [1, 2, 3], [image("cat")], 4
            )
            assert [job.request_id for job in c["p"].jobs] == ["r1", "r1~1"]
            assert "p/kv1" in c["p"].released  # attempt 0's KV, never routed to a decoder
            assert c.transport.arrays.keys() <= {"e1/emb0"}  # e1 is gone, and nothing else
            assert c.scheduler.trace("r1").event("redrive").attrs == {
                "stage": "encode", "attempt": 1, "resumed_tokens": 0,
                "reason": "prefill: worker e1 was removed",
            }  # fmt: skip

    run(body)
