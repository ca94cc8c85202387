"""The client's stream: every token once, in order, even across a re-drive."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.errors import RequestFailedError
from scheduler.output_stream import OutputStream
from scheduler.request import RequestOutput, Usage


def drain(stream: OutputStream) -> list[RequestOutput]:
    async def read() -> list[RequestOutput]:
        return [output async for output in stream]

    return asyncio.run(read())


def test_a_resumed_redrive_appends_to_what_the_client_has():
    stream = OutputStream("r1", num_prompt_tokens=5)

    async def run() -> list[RequestOutput]:
        stream.push([7])
        read = [await anext(stream)]
        stream.push([8])  # the first attempt's second token; then its worker is lost
        stream.push([9])  # the re-drive resumes after [7, 8]: its first token is the next
        stream.push([10], "length")
        return read + [output async for output in stream]

    assert asyncio.run(run()) == [
        RequestOutput("r1", [7]),
        RequestOutput("r1", [8, 9, 10], "length", Usage(5, 4, 0)),
    ]


def test_outputs_queued_while_the_reader_is_busy_leave_as_one():
    stream = OutputStream("r1", num_prompt_tokens=5)
    stream.push([7])
    stream.push([8, 9])
    stream.push([10], "stop")

    assert drain(stream) == [RequestOutput("r1", [7, 8, 9, 10], "stop", Usage(5, 4, 0))]


def test_tokens_queued_before_an_error_reach_the_client_before_it():
    stream = OutputStream("r1", num_prompt_tokens=5)
    stream.push([7])
    stream.push([8])
    stream.fail(RequestFailedError("worker lost"))

    async def read() -> tuple[RequestOutput, BaseException]:
        first = await anext(stream)
        with pytest.raises(RequestFailedError) as error:
            await anext(stream)
        return first, error.value

    first, error = asyncio.run(read())
    assert first == RequestOutput("r1", [7, 8])
    assert str(error) == "worker lost"
    assert drain(stream) == []  # nothing after the error


def test_cancelled_stream_ends_with_abort_and_its_usage():
    stream = OutputStream("r1", num_prompt_tokens=2)
    stream.num_cached_prompt_tokens = 1
    stream.push([4])
    stream.end("abort")
    stream.push([5])  # too late: the stream is closed

    assert drain(stream) == [RequestOutput("r1", [4], "abort", Usage(2, 1, 1))]
