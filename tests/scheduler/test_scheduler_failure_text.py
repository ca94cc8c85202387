"""What clients and traces say about a failure: the stage and a failure class, never a worker's
exception text (a Ray ActorDiedError carries a traceback, file paths and addresses). The full
exception goes to the log."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.errors import RequestFailedError
from scheduler.recovery import one_line
from scheduler.trace import Trace
from tests.scheduler.harness import cluster, run, spec, wait_until

RAY_ERROR = (
    "The actor died unexpectedly before finishing this task.\n"
    "Traceback (most recent call last):\n"
    '  File "/home/ray/anaconda3/lib/python3.11/site-packages/ray/_private/worker.py", '
    "line 2630, in get\n"
    "ray.exceptions.ActorDiedError: class_name: WorkerActor, ip: 10.0.3.17, pid=4242"
)
LEAKS = ("\n", "Traceback", "/home/ray", ".py", "10.0.3.17", "ActorDiedError")


def leaks_in(text: str) -> list[str]:
    return [leak for leak in LEAKS if leak in text]


def trace_leaks(trace: Trace) -> list[str]:
    texts = [str(value) for event in trace.events for value in event.attrs.values()]
    return [leak for text in texts for leak in leaks_in(text)]


def test_decode_worker_lost_mid_decode_tells_the_client_the_stage_and_class_only(caplog):
    async def body():
        async with cluster(SchedulerConfig(max_retries=0), p="P", d="D") as c:
            c["d"].poll_error, c["d"].die_after_steps = RAY_ERROR, 3
            outputs = await c.scheduler.generate(spec("r1", max_tokens=10))
            with pytest.raises(RequestFailedError) as failure:
                async for _ in outputs:
                    pass

            assert str(failure.value) == (
                "request 'r1': decode failed after 0 re-drives: decode worker lost"
            )
            assert trace_leaks(c.scheduler.trace("r1")) == []
            assert RAY_ERROR in caplog.text  # operators still get all of it

    run(body)


def test_redrive_after_a_lost_prefill_worker_traces_one_short_line():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].is_paused = True
            outputs = await c.scheduler.generate(spec("r1", max_tokens=4))
            await wait_until(lambda: len(c["p1"].jobs) == 1, "p1 has the prefill")
            c["p1"].poll_error = RAY_ERROR
            c["p1"].die()
            async for _ in outputs:
                pass

            trace = c.scheduler.trace("r1")
            assert trace.event("redrive").attrs["reason"] == "prefill: worker p1 failed to poll"
            assert trace_leaks(trace) == []

    run(body)


def test_worker_that_raises_on_submit_leaves_no_exception_text_in_the_trace():
    async def body():
        async with cluster(p1="P", p2="P", d="D") as c:
            c["p1"].refuse_with = ConnectionError(RAY_ERROR)
            await c.generate(spec("r1", max_tokens=4))

            trace = c.scheduler.trace("r1")
            assert trace.event("redrive").attrs["reason"] == "prefill: worker p1 failed a submit"
            assert trace_leaks(trace) == []

    run(body)


def test_a_workers_multi_line_failure_reason_reaches_neither_client_nor_trace():
    async def body():
        async with cluster(p="P", d="D") as c:
            c["p"].broken_reason = f"internal error: {RAY_ERROR}"
            with pytest.raises(RequestFailedError) as failure:
                await c.generate(spec("r1"))

            assert str(failure.value) == "request 'r1': prefill failed: internal error"
            assert trace_leaks(c.scheduler.trace("r1")) == []

    run(body)


def test_one_line_keeps_the_first_line_within_the_limit():
    assert one_line(RAY_ERROR) == "The actor died unexpectedly before finishing this task."
    assert one_line("x" * 300, limit=10) == "xxxxxxx..."
    assert one_line("  \n") == ""
