"""Requests through the scheduler over fake workers: where stages run, what moves, what the
client gets back."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.config import SchedulerConfig
from scheduler.request import RequestOutput, Usage
from tests.scheduler.fake_worker import expected_tokens
from tests.scheduler.harness import (
    cluster,
    collect,
    image,
    lifecycle_names,
    run,
    spec,
    token_ids,
    wait_until,
)
from workers.contract.messages import DecodeJob, PrefillJob


def test_text_request_on_an_epd_worker_streams_its_tokens_with_no_transfer():
    async def body():
        async with cluster(epd="EPD") as c:
            outputs = await c.generate(spec("r1", prompt=[1, 2, 3], max_tokens=4))

            assert outputs == [
                RequestOutput("r1", [6]),
                RequestOutput("r1", [7]),
                RequestOutput("r1", [8]),
                RequestOutput("r1", [9], "length", Usage(3, 4, 0)),
            ]
            assert c["epd"].calls == ["submit_prefill"]
            assert (c.transport.num_fetches, c.transport.arrays) == (0, {})
            trace = c.scheduler.trace("r1")
            assert lifecycle_names(trace) == [
                "queued", "prefill_start", "first_token", "decode_start", "decode_steps",
                "finished",
            ]  # fmt: skip
            # The first token is the prefill's; the three after it took one decode step each.
            assert trace.event("first_token").attrs == {
                "worker": "epd", "compute_ms": 1.0, "queue_ms": 0.25,
            }  # fmt: skip
            assert trace.event("decode_steps").attrs == {
                "count": 3, "compute_ms": 3.0, "queue_ms": 0.25,
            }  # fmt: skip

    run(body)


def test_image_request_on_an_epd_worker_runs_every_stage_there_with_no_transfer():
    async def body():
        async with cluster(epd="EPD") as c:
            request = spec("r1", images=[image("cat")], max_tokens=3)
            outputs = await c.generate(request)

            assert token_ids(outputs) == expected_tokens([1, 2, 3], [image("cat")], 3)
            # Prefill follows encode onto the worker: the embeddings never leave its cache.
            assert c["epd"].calls == ["submit_encode", "submit_prefill"]
            assert c["epd"].jobs[0].export is False
            assert c["epd"].jobs[1].images[0].ref is None
            assert (c.transport.num_fetches, c.transport.arrays) == (0, {})
            assert "embedding_transfer" not in c.scheduler.trace("r1").names

    run(body)


def test_image_request_across_e_p_d_workers_moves_embeddings_then_kv_and_frees_both():
    async def body():
        async with cluster(e="E", p="P", d="D") as c:
            outputs = await c.generate(spec("r1", images=[image("cat")], max_tokens=4))

            assert token_ids(outputs) == expected_tokens([1, 2, 3], [image("cat")], 4)
            assert c["e"].released == ["e/emb0"]  # after p imported it
            assert c["p"].released == ["p/kv1"]  # after d imported it
            assert c.transport.arrays == {}
            assert c["e"].jobs[0].export is True  # prefill runs elsewhere
            prefill, decode = c["p"].jobs[0], c["d"].jobs[0]
            assert isinstance(prefill, PrefillJob) and isinstance(decode, DecodeJob)
            assert (prefill.decode_here, prefill.expected_epochs) == (False, {"e": 0})
            assert (decode.first_token_id, decode.expected_epochs) == (
                outputs[0].token_ids[0],
                {"p": 0},
            )
            trace = c.scheduler.trace("r1")
            assert lifecycle_names(trace) == [
                "queued", "encode_start", "encode_done", "prefill_start", "embedding_transfer",
                "first_token", "decode_start", "kv_transfer", "decode_steps", "finished",
            ]  # fmt: skip
            assert trace.event("kv_transfer").attrs == {
                "bytes": 192, "ms": 0.5, "producer": "p", "consumer": "d",
            }  # fmt: skip
            assert trace.event("encode_done").attrs == {
                "worker": "e", "compute_ms": 1.0, "queue_ms": 0.25,
            }  # fmt: skip
            assert trace.event("first_token").attrs == {
                "worker": "p", "compute_ms": 1.0, "queue_ms": 0.25,
            }  # fmt: skip
            assert trace.event("decode_steps").attrs == {
                "count": 3, "compute_ms": 3.0, "queue_ms": 0.25,
            }  # fmt: skip
            times = [event.time_ms for event in trace.events]
            assert times == sorted(times)

    run(body)


def test_ep_plus_d_layout_moves_only_the_kv():
    async def body():
        async with cluster(ep="EP", d="D") as c:
            await c.generate(spec("r1", images=[image("cat")]))

            names = c.scheduler.trace("r1").names
            assert ("embedding_transfer" in names, "kv_transfer" in names) == (False, True)
            assert c["ep"].jobs[0].export is False
            assert c["ep"].released == ["ep/kv0"]  # the only array it ever exported
            assert c.transport.num_fetches == 1
            assert c.transport.arrays == {}

    run(body)


def test_colocated_and_disaggregated_layouts_give_the_same_tokens():
    requests = [
        spec("text", prompt=[5, 6, 7], max_tokens=5),
        spec("one-image", prompt=[9, 1], images=[image("cat")], max_tokens=5),
        spec("two-images", prompt=[4], images=[image("cat"), image("dog")], max_tokens=5),
    ]
    layouts = [
        {"epd": "EPD"},
        {"ep": "EP", "d": "D"},
        {"e": "E", "pd": "PD"},
        {"e": "E", "p": "P", "d": "D"},
    ]

    async def tokens_in(layout):
        async with cluster(**layout) as c:
            return [token_ids(await c.generate(request)) for request in requests]

    async def body():
        expected = [expected_tokens(r.prompt_token_ids, r.images, 5) for r in requests]
        for layout in layouts:
            assert await tokens_in(layout) == expected, layout

    run(body)


def test_concurrent_requests_spread_over_the_least_loaded_prefill_workers():
    async def body():
        async with cluster(p1="P", p2="P", d1="D", d2="D") as c:
            requests = [spec(f"r{i}", prompt=[i, i + 1], max_tokens=6) for i in range(8)]
            streams = [await c.scheduler.generate(request) for request in requests]
            results = await asyncio.gather(*(collect(stream) for stream in streams))

            for request, outputs in zip(requests, results, strict=True):
                assert token_ids(outputs) == expected_tokens(request.prompt_token_ids, [], 6)
            assert [job.request_id for job in c["p1"].jobs] == ["r0", "r2", "r4", "r6"]
            assert [job.request_id for job in c["p2"].jobs] == ["r1", "r3", "r5", "r7"]
            assert len(c["d1"].jobs) + len(c["d2"].jobs) == 8
            assert c.transport.arrays == {}

    run(body)


def test_decode_tokens_arrive_without_per_token_calls():
    async def body():
        async with cluster(p="P", d="D") as c:
            outputs = await c.generate(spec("r1", max_tokens=20))

            assert len(token_ids(outputs)) == 20
            assert c["d"].calls == ["submit_decode"]
            assert c["p"].calls == ["submit_prefill", "release"]

    run(body)


@pytest.mark.parametrize("layout", [{"p": "P", "d": "D"}, {"p": "PD"}])
def test_last_output_reports_usage_with_cached_prompt_tokens(layout):
    async def body():
        async with cluster(**layout) as c:
            c["p"].num_cached_tokens = 2
            outputs = await c.generate(spec("r1", prompt=[1, 2, 3], max_tokens=3))

            assert [output.usage for output in outputs] == [None, None, Usage(3, 3, 2)]

    run(body)


def test_request_that_finishes_at_its_first_token_never_reaches_a_decoder():
    async def body():
        async with cluster(p="P", d="D") as c:
            outputs = await c.generate(spec("r1", prompt=[1, 2, 3], max_tokens=1))

            assert outputs == [RequestOutput("r1", [6], "length", Usage(3, 1, 0))]
            assert c["d"].calls == []
            assert lifecycle_names(c.scheduler.trace("r1")) == [
                "queued", "prefill_start", "first_token", "finished",
            ]  # fmt: skip

    run(body)


def test_draining_worker_gets_no_new_work_and_is_idle_once_its_requests_are_done():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].is_paused = True
            first = await c.scheduler.generate(spec("a"))
            c.scheduler.set_draining("p1")
            second = await c.scheduler.generate(spec("b"))

            assert [job.request_id for job in c["p2"].jobs] == ["b"]
            assert c.scheduler.is_idle("p1") is False
            c["p1"].resume()
            await asyncio.gather(collect(first), collect(second))
            await wait_until(lambda: c.scheduler.is_idle("p1"), "p1 is idle")
            assert [job.request_id for job in c["p1"].jobs] == ["a"]
            assert c.scheduler.snapshot().workers["p1"].is_draining is True

    run(body)


def test_snapshot_shows_requests_by_state_and_each_workers_last_load():
    async def body():
        async with cluster(p="P", d="D") as c:
            await c.generate(spec("done"))
            c["p"].is_paused = True
            await c.scheduler.generate(spec("waiting"))
            await wait_until(
                lambda: c.scheduler.snapshot().workers["p"].load.num_waiting == 1, "p reports"
            )

            snapshot = c.scheduler.snapshot()
            assert snapshot.num_requests_by_state == {
                "queued": 0, "encoding": 0, "prefilling": 1, "decoding": 0, "finished": 1,
                "failed": 0, "cancelled": 0,
            }  # fmt: skip
            assert sorted(snapshot.workers) == ["d", "p"]
            p = snapshot.workers["p"]
            assert (p.pool, p.stages, p.epoch, p.load.num_active) == ("p-pool", "P", 0, 1)

    run(body)


def test_traces_of_the_last_ended_requests_stay_readable():
    async def body():
        async with cluster(SchedulerConfig(trace_capacity=2), epd="EPD") as c:
            for request_id in ("r0", "r1", "r2"):
                await c.generate(spec(request_id))

            assert c.scheduler.trace("r0") is None
            assert [c.scheduler.trace(r).names[-1] for r in ("r1", "r2")] == ["finished"] * 2
            assert c.scheduler.trace("never") is None

    run(body)
