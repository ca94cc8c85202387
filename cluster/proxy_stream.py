"""A client that cancels a stream always cancels its request, whenever its cancel lands in the
Serve proxy.

Ray Serve's gRPC proxy serves a server-streaming call as an async generator, in the call's
task, that alternates between two waits:

    await the ingress replica's next message  -> a client's cancel here cancels the replica's
                                                 request (Serve's ProxyResponseGenerator): the
                                                 ingress's `Generate` ends, and cancels ours
    await grpc's write of the previous one     -> a cancel here leaves the generator suspended,
                                                 never closed: the replica streams on, and the
                                                 request runs to its max_tokens

(Ray 2.60, 2 cores: 12 of 121 cancelled streams ran to max_tokens.) `cancel_on_departure`
wraps the proxy's handler so that the two waits are in different tasks: a pump task runs
Serve's generator and queues its messages without waiting, so it only ever waits on the
replica; the call's own task writes. Whichever of them the cancel hits, the call's task ends
in `finally`, which cancels the pump where it waits: on the replica, Serve's path that works.

Serve replaces the handlers a service registers with its own routing ones; a passthrough
service keeps them. So the Triserve service registers as passthrough with Serve's routing
handlers, taken from Serve's own override, the streaming ones wrapped (`cancelling_on_departure`).
A Serve without that override gets the plain registration, and its cancels can be missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

ROUTING_OVERRIDE = "_override_method_handler"  # private, of Ray 2.60's gRPCGenericServer
StreamHandler = Callable[[Any, Any], AsyncIterator[Any]]  # (request, context) -> messages
_END = object()


def cancel_on_departure(stream_handler: StreamHandler) -> Callable[[Any, Any], Any]:
    """A coroutine handler (it writes with `context.write`) serving `stream_handler`'s
    messages, that cancels `stream_handler` when the call ends early for any reason."""

    async def handle(request: Any, context: Any) -> None:
        messages: asyncio.Queue[Any] = asyncio.Queue()  # unbounded: the pump never waits on it

        async def pump() -> None:
            try:
                async for message in stream_handler(request, context):
                    messages.put_nowait(message)
            finally:
                messages.put_nowait(_END)

        pumping = asyncio.create_task(pump())
        try:
            while (message := await messages.get()) is not _END:
                await context.write(message)
            await pumping  # its error, if it raised one
        finally:
            pumping.cancel()  # a no-op once it ended

    return handle


def can_cancel_on_departure(server: Any) -> bool:
    """Serve's gRPC server, with the hooks `cancelling_on_departure` needs."""
    return hasattr(server, ROUTING_OVERRIDE) and hasattr(server, "add_passthrough_service")


def cancelling_on_departure(
    server: Any, service_name: str, handlers: dict[str, grpc.RpcMethodHandler]
) -> dict[str, grpc.RpcMethodHandler]:
    """Serve's routing handlers for `handlers` (to the ingress, as bytes), each server stream's
    wrapped by `cancel_on_departure`."""
    override = getattr(server, ROUTING_OVERRIDE)
    routed = {}
    for method, handler in handlers.items():
        serve = override(f"/{service_name}/{method}", handler)
        if handler.response_streaming and not handler.request_streaming:
            serve = serve._replace(unary_stream=cancel_on_departure(serve.unary_stream))
        routed[method] = serve
    return routed
