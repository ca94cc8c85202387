"""Sessions through the scheduler over fake workers: a call that ends paused leaves its KV on its
decode worker; the call that continues it is prefilled there (a decode-only worker included) and
decodes there; when that KV is gone it is a plain prefill; nothing pinned outlives the client's
interest or the worker."""

from __future__ import annotations

from dataclasses import replace

from scheduler.request import SessionSpec
from tests.scheduler.fake_worker import expected_tokens
from tests.scheduler.harness import cluster, image, run, spec, token_ids, wait_until
from workers.contract.messages import PrefillJob

FIRST = [1, 2, 3]


def call(request_id: str, prompt, **session) -> object:
    request = spec(request_id, prompt=prompt, max_tokens=3)
    return replace(request, session=SessionSpec(session_id="s", **session))


def prefills(worker) -> list[PrefillJob]:
    return [job for job in worker.jobs if isinstance(job, PrefillJob)]


def test_a_continuation_is_prefilled_and_decoded_on_the_decode_worker_holding_its_kv():
    async def body():
        async with cluster(p="P", d="D") as c:
            first = await c.generate(call("t1", FIRST, pause=True))
            await wait_until(lambda: c.scheduler.sessions.pinned(), "t1's KV is pinned")
            (pinned,) = c.scheduler.sessions.pinned()
            assert (pinned.request_id, pinned.worker_id) == ("t1", "d")
            assert c["d"].paused == {"t1": 3}

            second = [*FIRST, *token_ids(first), 7, 8]
            outputs = await c.generate(call("t2", second, resume_of="t1", pause=True))

            (job,) = prefills(c["d"])
            assert (job.resume_from, job.decode_here) == ("t1", True)
            assert job.pause is not None and job.pause.ttl_s > 0
            assert len(prefills(c["p"])) == 1  # t1's only
            assert token_ids(outputs) == expected_tokens(second, [], 3)
            assert c["d"].resumed == ["t1"]
            trace = c.scheduler.trace("t2")
            assert trace.event("continues").attrs["worker"] == "d"
            assert trace.event("pause_planned").attrs["worker"] == "d"

    run(body)


def test_a_call_naming_only_its_session_continues_the_sessions_last_paused_call():
    async def body():
        async with cluster(epd="EPD") as c:
            first = await c.generate(call("t1", FIRST, pause=True))
            await wait_until(lambda: c.scheduler.sessions.pinned(), "t1's KV is pinned")
            await c.generate(call("t2", [*FIRST, *token_ids(first), 5], pause=True))
            assert prefills(c["epd"])[-1].resume_from == "t1"

    run(body)


def test_without_its_kv_a_continuation_is_a_plain_prefill_with_the_same_tokens():
    async def body():
        async with cluster(p="P", d="D", d2="D") as c:
            first = await c.generate(call("t1", FIRST, pause=True))
            await wait_until(lambda: c.scheduler.sessions.pinned(), "t1's KV is pinned")
            holder = c.scheduler.sessions.pinned()[0].worker_id
            await c.scheduler.remove_worker(holder)
            assert c.scheduler.sessions.pinned() == []

            second = [*FIRST, *token_ids(first), 9]
            outputs = await c.generate(call("t2", second, resume_of="t1"))

            assert [job.resume_from for job in prefills(c["p"])] == [None, None]
            assert token_ids(outputs) == expected_tokens(second, [], 3)
            assert c.scheduler.trace("t2").event("not_continued") is not None

    run(body)


def test_forgetting_a_paused_call_releases_its_kv_on_its_worker():
    async def body():
        async with cluster(epd="EPD") as c:
            await c.generate(call("t1", FIRST, pause=True))
            await wait_until(lambda: c.scheduler.sessions.pinned(), "t1's KV is pinned")

            assert await c.scheduler.forget_paused("t1") is True
            await wait_until(lambda: not c["epd"].paused, "the worker released it")
            assert c.scheduler.sessions.pinned() == []
            assert await c.scheduler.forget_paused("t1") is False

    run(body)


def test_a_call_without_pause_keeps_nothing_and_a_plain_request_is_untouched():
    async def body():
        async with cluster(epd="EPD") as c:
            await c.generate(call("t1", FIRST))
            await c.generate(spec("plain", prompt=FIRST, max_tokens=3))
            assert c["epd"].paused == {} and c.scheduler.sessions.pinned() == []
            assert all(job.pause is None for job in prefills(c["epd"]))

    run(body)


def test_a_returning_turn_keeps_its_sessions_place_in_the_queue():
    async def body():
        now = [1000.0]
        async with cluster(clock=lambda: now[0], epd="EPD") as c:
            first = await c.generate(replace(call("t1", FIRST), arrival_time=now[0]))
            now[0] += 30.0  # the session's next call, 30 s later
            new = spec("new", prompt=[4, 5, 6], max_tokens=3)
            returning = replace(call("t2", [*FIRST, *token_ids(first)]), arrival_time=now[0])
            await c.generate(replace(new, arrival_time=now[0]))
            await c.generate(returning)
            starts = {
                rid: c.scheduler.trace(rid).event("dispatched").attrs["latest_start_ms"]
                for rid in ("new", "t2")
            }
            assert starts["new"] - starts["t2"] >= 29_000.0

    run(body)


def test_a_next_call_sent_the_moment_the_answer_ends_still_continues_it():
    async def body():
        async with cluster(p="P", d="D") as c:
            first = await c.generate(call("t1", FIRST, pause=True))
            await c.generate(call("t2", [*FIRST, *token_ids(first), 5], resume_of="t1"))
            assert [job.resume_from for job in prefills(c["d"])] == ["t1"]

    run(body)


def test_an_image_continuation_is_encoded_then_prefilled_where_its_kv_is():
    async def body():
        async with cluster(e="E", p="P", d="D") as c:
            first_call = replace(call("t1", FIRST, pause=True), images=[image("cat")])
            first = await c.generate(first_call)
            second = [*FIRST, *token_ids(first), 6]
            request = replace(call("t2", second, resume_of="t1"), images=[image("cat")])
            outputs = await c.generate(request)
            (job,) = prefills(c["d"])
            assert job.resume_from == "t1" and all(e.ref is not None for e in job.images)
            assert token_ids(outputs) == expected_tokens(second, [image("cat")], 3)

    run(body)
