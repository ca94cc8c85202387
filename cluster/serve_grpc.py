"""How Triserve plugs into Ray Serve's gRPC proxy: the servicer functions the proxy imports
(`SERVICER_FUNCTIONS`, passed as `gRPCOptions.grpc_servicer_functions`), and the log filter that
keeps a client's error to one line in Serve's logs.

- The Triserve service is registered without request deserializers, so the proxy forwards each
  request's bytes unparsed and the ingress parses them (`request_builder.parse_message`).
  With the generated deserializer, bytes that are not the message, a truncated message or a
  string field that is not UTF-8 failed inside grpc, which answers UNKNOWN with the Python
  exception's text; the ingress answers INVALID_ARGUMENT. The proxy also parses nothing.
- Serve enables server reflection as `grpc.reflection.v1alpha` only; current clients (grpcurl,
  grpc-js) ask `grpc.reflection.v1` first. Its messages are v1alpha's under a new package name,
  so the v1alpha servicer answers both.
- Each Generate call is stamped with the time it reached the proxy (`proxy_received_unix_s`,
  `stamp_received`), so that the SLO clock and admission count the time it then queues in front
  of the ingress: under overload, up to seconds that the ingress alone cannot see. A call the
  admission gate closes is refused right there (`at_the_door`, cluster/door.py), without a
  hop to a replica; it is counted in the metrics, not logged.
- Serve logs every failed call with a traceback (the replica two chained ones, the proxy one),
  echoing the client's texts. `ClientErrorLogFilter` keeps a traceback for INTERNAL (and
  UNKNOWN) only: it cuts any other to one line, or drops it where the ingress already logged it.
"""

from __future__ import annotations

import logging
import struct
import time

import grpc
from google.protobuf import message_factory
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_pb

from cluster.door import Door
from cluster.errors import failure_line
from cluster.names import CONTROL_PLANE_NAME, NAMESPACE
from cluster.proxy_stream import can_cancel_on_departure, cancelling_on_departure
from proto.triserve.v1 import triserve_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Triserve"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
HEALTH = "grpc.health.v1.Health"
SERVICER_FUNCTIONS = [
    "cluster.serve_grpc.add_triserve_servicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
    "cluster.serve_grpc.add_reflection_v1_to_server",  # after the services it lists
]
SERVE_LOGGER = "ray.serve"
_RECEIVED_FIELD = pb.GenerateRequest.DESCRIPTOR.fields_by_name["proxy_received_unix_s"].number
_RECEIVED_TAG = bytes([_RECEIVED_FIELD << 3 | 1])  # wire type 1 (64 bits); one byte below 16
MAX_PROXY_WAIT_S = 60.0
TRACEBACK_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def add_triserve_servicer_to_server(servicer, server) -> None:
    """The generated `add_TriserveServicer_to_server`, less its request deserializers (every
    method of the service, from its descriptor). Also installs `ClientErrorLogFilter` in the
    process that calls it, Serve's proxy. Streams are routed so that a client's cancel always
    reaches the ingress (proxy_stream.py)."""
    handlers = triserve_handlers(servicer)
    if can_cancel_on_departure(server):
        server.add_passthrough_service(SERVICE_NAME)  # Serve routes it through ours, below
        handlers = cancelling_on_departure(server, SERVICE_NAME, handlers)
        generate = handlers["Generate"]
        handlers["Generate"] = generate._replace(unary_stream=at_the_door(generate.unary_stream))
    _add_service(server, SERVICE_NAME, handlers)
    install_client_error_filter(drop=False)


def triserve_handlers(servicer) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> handler that passes the request's bytes to `servicer`'s method."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Triserve"].methods:
        if method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: client streaming")
        response = message_factory.GetMessageClass(method.output_type)
        handler = grpc.unary_unary_rpc_method_handler
        if method.server_streaming:
            handler = grpc.unary_stream_rpc_method_handler
        handlers[method.name] = handler(
            getattr(servicer, method.name), response_serializer=response.SerializeToString
        )
    return handlers


def stamp_received(request: bytes, now_s: float) -> bytes:
    """A serialized GenerateRequest with `proxy_received_unix_s` = `now_s`, put first: a value
    the client set comes later and wins, and the ingress bounds it (`received_at`)."""
    return _RECEIVED_TAG + struct.pack("<d", now_s) + request


def at_the_door(handler, door: Door | None = None):
    """A proxy handler that refuses what the admission gate closes, and stamps the rest's bytes
    before `handler` routes them. `door`: the proxy's own (made on its first call)."""

    async def handle(request, context):
        nonlocal door
        if isinstance(request, bytes):
            door = door or _proxy_door()
            if door is not None:
                door.open_if_needed()
                await _refuse_if_closed(door, request, context)
            request = stamp_received(request, time.time())
        return await handler(request, context)

    return handle


async def _refuse_if_closed(door: Door, request: bytes, context) -> None:
    """End the call with RESOURCE_EXHAUSTED (and its retry hint) when the gate refuses it."""
    refusal = door.refusal_of(request)
    if refusal is not None:
        context.set_trailing_metadata([("retry-after-ms", str(round(refusal.retry_after_ms)))])
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(refusal))


def _proxy_door() -> Door | None:
    """A door fetching the gate from the control plane (None while there is none to ask)."""
    import ray

    try:
        return Door(ray.get_actor(CONTROL_PLANE_NAME, namespace=NAMESPACE))
    except Exception:  # not started yet, or restarting: the next call asks again
        return None


def received_at(request: pb.GenerateRequest, now_s: float) -> float:
    """When the call reached the proxy: its stamp, if any, bounded to the last minute."""
    stamp = request.proxy_received_unix_s
    return min(now_s, max(now_s - MAX_PROXY_WAIT_S, stamp)) if stamp else now_s


def add_reflection_v1_to_server(servicer, server) -> None:
    """`grpc.reflection.v1` on the proxy itself (a passthrough service, not routed to the
    ingress). Skipped on a Serve whose server cannot run a service of its own."""
    if not hasattr(server, "add_passthrough_service"):
        return
    server.add_passthrough_service(REFLECTION_V1)
    names = sorted([SERVICE_NAME, HEALTH, REFLECTION_V1, reflection.SERVICE_NAME])
    info = reflection.aio.ReflectionServicer(names).ServerReflectionInfo
    handler = grpc.stream_stream_rpc_method_handler(
        info,
        request_deserializer=reflection_pb.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb.ServerReflectionResponse.SerializeToString,
    )
    _add_service(server, REFLECTION_V1, {"ServerReflectionInfo": handler})


def _add_service(server, name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.63
        server.add_registered_method_handlers(name, handlers)


class ClientErrorLogFilter(logging.Filter):
    """On Serve's logger: a record of a failed call whose status the ingress set (Serve's
    gRPCStatusError) keeps its traceback only for TRACEBACK_CODES. Any other is cut to one
    warning line, or dropped when `drop` (in the ingress replica, whose own line says it
    already)."""

    def __init__(self, drop: bool) -> None:
        super().__init__()
        self.drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        code = getattr(error, "grpc_code", None)
        if not isinstance(code, grpc.StatusCode) or code in TRACEBACK_CODES:
            return True
        if self.drop:
            return False
        record.msg, record.args = failure_line(code, getattr(error, "grpc_details", "") or ""), ()
        record.exc_info = record.exc_text = record.stack_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"  # not a server error
        return True


def install_client_error_filter(drop: bool) -> None:
    """Add `ClientErrorLogFilter` to Serve's logger in this process, once."""
    logger = logging.getLogger(SERVE_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter(drop))
