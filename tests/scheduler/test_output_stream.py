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


def test_tokens_replayed_by_a_redrive_reach_the_client_once():
    stream = OutputStream("r1", num_prompt_tokens=5)

    async def run() -> tuple[list, list[RequestOutput]]:
        read = []
        stream.push([7])
        read.append(await anext(stream))
        stream.restart()
        pushed = [stream.push([7])]
        pushed.append(stream.push([8]))
        read.append(await anext(stream))
        stream.push([9], "length")
        read += [output async for output in stream]
        return pushed, read

    pushed, read = asyncio.run(run())
    assert pushed == [[], [8]]
    assert read == [
        RequestOutput("r1", [7]),
        RequestOutput("r1", [8]),
        RequestOutput("r1", [9], "length", Usage(5, 3, 0)),
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


def test_a_replayed_token_that_differs_fails_instead_of_reaching_the_client():
    stream = OutputStream("r1", num_prompt_tokens=5)
    stream.push([7, 8])
    stream.restart()

    with pytest.raises(RequestFailedError, match=r"produced \[7, 9\] where the client already"):
        stream.push([7, 9])
    assert stream.token_ids == [7, 8]


def test_cancelled_stream_ends_with_abort_and_its_usage():
    stream = OutputStream("r1", num_prompt_tokens=2)
    stream.num_cached_prompt_tokens = 1
    stream.push([4])
    stream.end("abort")
    stream.push([5])  # too late: the stream is closed

    assert drain(stream) == [RequestOutput("r1", [4], "abort", Usage(2, 1, 1))]
