"""The door: which requests the ingress refuses by the admission gate, before building them."""

from __future__ import annotations

import asyncio
import io
import time

import grpc
import pytest
from PIL import Image

from cluster.door import Door, door_class
from cluster.serve_grpc import at_the_door, received_at, stamp_received
from proto.triserve.v1 import triserve_pb2 as pb
from scheduler.admission_gate import AdmissionGate, ModelGate
from scheduler.errors import AdmissionRejectedError


def gate(sand_ms: float = 5_000.0, pebble_ms: float = 500.0) -> AdmissionGate:
    return AdmissionGate(
        models={"tiny": ModelGate({"sand": sand_ms, "pebble": pebble_ms}, 16)},
        default_ttft_ms={"sand": 1_000.0, "pebble": 3_000.0},
        default_admission="reject",
        rock_min_images=4,
        rock_min_image_pixels=2_000_000,
        rock_min_prompt_tokens=2048,
    )


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def request(text: str = "hello", images: tuple[bytes, ...] = (), **fields) -> pb.GenerateRequest:
    message = pb.GenerateRequest(**fields)
    message.raw.text = text
    message.raw.images.extend(images)
    return message


def test_the_class_comes_from_the_shape_and_anything_that_may_be_a_rock_goes_through():
    g = gate()
    assert door_class(request(), g, "tiny") == "sand"
    assert door_class(request(images=(png(64, 64),)), g, "tiny") == "pebble"
    assert door_class(request(images=(png(64, 64),) * 4), g, "tiny") is None  # rock by count
    assert door_class(request(images=(png(2000, 1000),)), g, "tiny") is None  # by pixels
    assert door_class(request("word " * 400), g, "tiny") is None  # could reach 2048 tokens
    assert door_class(request(images=(b"not an image",)), g, "tiny") is None  # the builder's
    assert door_class(request(), g, "other") is None


def door_with(g: AdmissionGate) -> Door:
    door = Door(scheduler=None)
    door._gate, door._fetched_at = g, time.monotonic()
    return door


def test_a_closed_class_is_refused_with_a_retry_hint_and_counted():
    door = door_with(gate())
    with pytest.raises(AdmissionRejectedError, match=r"\(sand\) rejected: predicted TTFT 5000"):
        door.check(request(request_id="r1"), "tiny")
    door.check(request(images=(png(64, 64),)), "tiny")  # pebbles are open
    door.check(request(admission=pb.ADMISSION_BEST_EFFORT), "tiny")  # admitted at low priority
    slo = pb.SLO(ttft_ms=10_000.0)
    door.check(request(slo=slo), "tiny")  # its own target is further
    door.check(request(slo=pb.SLO(ttft_ms=500.0)), "tiny")  # nearer: the scheduler judges it
    assert door._refused == {"sand": 1}


def test_a_stale_gate_refuses_nothing():
    door = door_with(gate())
    door._fetched_at -= 60.0
    door.check(request(), "tiny")
    assert not door._refused


def test_the_proxy_stamp_starts_the_slo_clock_and_a_client_cannot_move_it_later():
    body = request(request_id="r1").SerializeToString()
    stamped = pb.GenerateRequest.FromString(stamp_received(body, 1_000.0))
    assert stamped.request_id == "r1" and stamped.raw.text == "hello"
    assert received_at(stamped, now_s=1_002.0) == 1_000.0
    spoofed = request(proxy_received_unix_s=5_000.0).SerializeToString()
    assert (
        pb.GenerateRequest.FromString(stamp_received(spoofed, 1_000.0)).proxy_received_unix_s == 5e3
    )
    assert received_at(pb.GenerateRequest.FromString(spoofed), now_s=1_002.0) == 1_002.0
    assert received_at(request(), now_s=1_002.0) == 1_002.0  # no proxy stamp: now
    old = request(proxy_received_unix_s=1.0)
    assert received_at(old, now_s=1_002.0) == 1_002.0 - 60.0  # bounded to the last minute


def test_a_request_that_queued_past_its_target_before_the_ingress_is_refused_at_the_door():
    door = door_with(gate(pebble_ms=500.0))
    pebble = request(images=(png(64, 64),))
    door.check(pebble, "tiny", waited_ms=2_000.0)  # 500 + 2000 <= 3000
    with pytest.raises(AdmissionRejectedError, match="predicted TTFT 3100 ms > target 3000"):
        door.check(pebble, "tiny", waited_ms=2_600.0)


class FakeContext:
    def __init__(self) -> None:
        self.trailing, self.aborted = None, None

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = metadata

    async def abort(self, code, details) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")  # as grpc.aio's abort ends the handler


def test_the_proxy_refuses_what_the_gate_closes_and_stamps_what_it_lets_through():
    routed = []

    async def route(request, context):
        routed.append(request)

    handle = at_the_door(route, door_with(gate()))

    async def call(message: bytes) -> FakeContext:
        context = FakeContext()
        try:
            await handle(message, context)
        except RuntimeError:
            pass
        return context

    refused = asyncio.run(call(request(request_id="r1").SerializeToString()))
    assert refused.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "(sand) rejected: predicted TTFT 5000 ms > target 1000" in refused.aborted[1]
    assert refused.trailing == [("retry-after-ms", "4000")]
    assert not routed

    passed = asyncio.run(call(request(images=(png(64, 64),)).SerializeToString()))
    assert passed.aborted is None
    assert pb.GenerateRequest.FromString(routed[0]).proxy_received_unix_s > 0  # stamped
    garbage = asyncio.run(call(b"\xff not a request"))  # the ingress says what is wrong with it
    assert garbage.aborted is None and routed[1].endswith(b"\xff not a request")
