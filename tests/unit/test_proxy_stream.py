"""A client's cancel reaches the ingress wherever it lands in the Serve proxy's stream handler."""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import grpc
import pytest

from cluster.proxy_stream import cancel_on_departure, cancelling_on_departure


class FakeProxyStream:
    """Serve's stream handler: it waits on the replica for each message, and notes whether a
    cancel reached it there (Serve then cancels the replica's request)."""

    def __init__(self, num_messages: int) -> None:
        self.num_messages = num_messages
        self.replica = asyncio.Queue()
        self.saw_cancel = asyncio.Event()

    async def __call__(self, request, context):
        for _ in range(self.num_messages):
            try:
                message = await self.replica.get()
            except asyncio.CancelledError:
                self.saw_cancel.set()
                raise
            yield message


class FakeContext:
    def __init__(self, blocks_on_write: bool = False) -> None:
        self.written: list[str] = []
        self.is_writing = asyncio.Event()
        self.blocks_on_write = blocks_on_write

    async def write(self, message: str) -> None:
        self.is_writing.set()
        if self.blocks_on_write:
            await asyncio.Event().wait()  # the write of a client that is going away
        self.written.append(message)


def test_every_message_is_written_in_order():
    async def main():
        proxy, context = FakeProxyStream(3), FakeContext()
        for message in ("a", "b", "c"):
            proxy.replica.put_nowait(message)
        await asyncio.wait_for(cancel_on_departure(proxy)(b"", context), 5.0)
        return context.written

    assert asyncio.run(main()) == ["a", "b", "c"]


@pytest.mark.parametrize("lands_in", ["write", "wait_for_replica"])
def test_a_cancel_reaches_the_replica_wherever_it_lands(lands_in):
    async def main():
        proxy = FakeProxyStream(100)
        context = FakeContext(blocks_on_write=lands_in == "write")
        call = asyncio.create_task(cancel_on_departure(proxy)(b"", context))
        if lands_in == "write":
            proxy.replica.put_nowait("first")
            await asyncio.wait_for(context.is_writing.wait(), 5.0)
        else:
            await asyncio.sleep(0.01)
        call.cancel()  # what grpc does to the call's task when the client cancels
        await asyncio.wait_for(proxy.saw_cancel.wait(), 5.0)
        return call

    assert asyncio.run(main()).cancelled()


def test_a_stream_handler_error_ends_the_call():
    async def failing(request, context):
        yield "a"
        raise RuntimeError("replica died")

    async def main():
        await cancel_on_departure(failing)(b"", FakeContext())

    with pytest.raises(RuntimeError, match="replica died"):
        asyncio.run(main())


def test_only_server_streams_are_wrapped_in_serves_routing():
    routed = {}

    def override(service_method, handler):
        routed[service_method] = handler._replace(unary_unary="serve-unary", unary_stream="serve")
        return routed[service_method]

    server = Mock(_override_method_handler=override)
    handlers = {
        "Generate": grpc.unary_stream_rpc_method_handler(lambda r, c: None),
        "GetTrace": grpc.unary_unary_rpc_method_handler(lambda r, c: None),
    }
    ours = cancelling_on_departure(server, "triserve.v1.Triserve", handlers)
    assert sorted(routed) == ["/triserve.v1.Triserve/Generate", "/triserve.v1.Triserve/GetTrace"]
    assert ours["GetTrace"].unary_unary == "serve-unary"
    assert asyncio.iscoroutinefunction(ours["Generate"].unary_stream)
