"""A request the client cancelled is counted as cancelled, not as failed."""

from __future__ import annotations

from tests.scheduler.harness import cluster, collect, run, spec, wait_until


def test_a_cancelled_request_is_counted_cancelled_not_failed():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].hold("prefills")
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await wait_until(c["p"].is_holding.is_set, "r1 is prefilling")
            assert await c.scheduler.cancel("r1") is True
            c["p"].unhold()
            assert [output.finish_reason for output in await collect(outputs)] == ["abort"]

            counts = [(k.num_cancelled, k.num_failed) for k in c.scheduler.ledger.classes.values()]
            assert sorted(counts) == [(0, 0), (0, 0), (1, 0)]
            assert c.scheduler.trace("r1").state == "cancelled"

    run(body)
