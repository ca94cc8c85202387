"""Bad input refused at the door, through the real proxy and ingress: each malformed or oversized
request gets INVALID_ARGUMENT naming what is wrong, fast, and the cluster keeps serving. Also
server reflection on both protocol versions clients ask for."""

from __future__ import annotations

import math
import time

import grpc
import pytest

from cluster.client import APPLICATION, TriserveError, build_request
from tests.cluster.conftest import API_TOKEN
from tests.unit.test_limits import png_header

GENERATE = "/triserve.v1.Triserve/Generate"
METADATA = [("application", APPLICATION), ("authorization", f"Bearer {API_TOKEN}")]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def call_raw(address: str, payload: bytes) -> grpc.RpcError:
    """Send `payload` as the request's bytes, as any client could; the error it ends with."""
    with grpc.insecure_channel(address) as channel:
        generate = channel.unary_stream(GENERATE)  # no serializers: bytes in, bytes out
        with pytest.raises(grpc.RpcError) as error:
            list(generate(payload, metadata=METADATA, timeout=60))
    return error.value


def refused(client, **kwargs) -> TriserveError:
    kwargs.setdefault("model", "coloc")
    with pytest.raises(TriserveError) as error:
        client.complete(**kwargs)
    return error.value


VALID = build_request(prompt="hello there", model="coloc", max_tokens=2).SerializeToString()
MALFORMED = {
    "not_a_protobuf": b"\xff\xff\xff\xff\x0fthis is not a protobuf",
    "truncated": VALID[:-3],
    "invalid_utf8": VALID.replace(b"hello", b"he\xff\xfeo"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_bytes_that_are_not_a_request_are_invalid_argument_without_internals(cluster, kind):
    error = call_raw(cluster.address, MALFORMED[kind])
    assert error.code() == INVALID
    assert "not a valid triserve.v1.GenerateRequest" in error.details()
    assert "Traceback" not in error.details() and "Error(" not in error.details()


def test_the_valid_bytes_those_were_cut_from_are_served(cluster):
    with grpc.insecure_channel(cluster.address) as channel:
        responses = list(channel.unary_stream(GENERATE)(VALID, metadata=METADATA, timeout=60))
    assert responses  # so the refusals above are about the bytes, not the raw call


@pytest.mark.parametrize("value", [-100.0, 0.0, math.nan])
@pytest.mark.parametrize("field", ["ttft_ms", "tpot_ms"])
def test_slo_targets_that_are_not_positive_are_invalid_not_exhausted(client, field, value):
    error = refused(client, prompt="hi", **{field: value})
    assert error.code == INVALID and f"slo.{field}" in error.details
    assert error.retry_after_ms is None


@pytest.mark.parametrize("max_tokens", [2**31, 2**32 - 1])
def test_max_tokens_beyond_the_limit_is_refused(client, max_tokens):
    error = refused(client, prompt="hi", max_tokens=max_tokens)
    assert error.code == INVALID and "limits.max_tokens" in error.details


def test_max_tokens_of_minus_one_on_the_wire_is_refused(cluster):
    # A client with a signed field sends -1 as a 10-byte varint; uint32 reads 2**32 - 1.
    request = build_request(prompt="hi", model="coloc")
    payload = request.SerializeToString() + b"\x2a\x0b" + b"\x08" + b"\xff" * 9 + b"\x01"
    error = call_raw(cluster.address, payload)
    assert error.code() == INVALID and "sampling.max_tokens asks for 4,294,967,295" in (
        error.details()
    )


def test_too_many_images_are_refused_before_decoding(client):
    error = refused(client, prompt="<image>" * 65, images=[b"never decoded"] * 65)
    assert error.code == INVALID
    assert error.details == "request has 65 images; the limit is limits.max_images = 64"


def test_an_image_over_the_byte_limit_is_refused(client):
    error = refused(client, prompt="<image> what?", images=[b"\x00" * (8 * 2**20 + 1)])
    assert error.code == INVALID and "limits.max_image_bytes = 8,388,608" in error.details


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(client):
    error = refused(client, prompt="<image> what?", images=[png_header(7900, 7900)])
    assert error.code == INVALID and "limits.max_image_pixels = 16,777,216" in error.details
    assert "7,900x7,900" in error.details


def test_an_over_long_prompt_is_refused_fast_and_text_keeps_flowing(client):
    started = time.monotonic()
    error = refused(client, prompt="word " * (2**20 // 5 + 1))
    assert time.monotonic() - started < 5.0  # was 11.6 s of tokenising
    assert error.code == INVALID and "limits.max_prompt_chars = 1,048,576" in error.details
    assert client.complete(prompt="still there?", model="coloc", max_tokens=2).token_ids


def test_an_over_long_request_id_is_refused_without_echoing_it(client):
    error = refused(client, prompt="hi", request_id="r" * 2**20)
    assert error.code == INVALID
    assert error.details == (
        "request_id has 1,048,576 characters; the limit is limits.max_request_id_chars = 256"
    )


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_server_reflection_answers_both_protocol_versions(cluster, version):
    from grpc_reflection.v1alpha import reflection_pb2 as messages  # v1 has the same messages

    with grpc.insecure_channel(cluster.address) as channel:
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=messages.ServerReflectionRequest.SerializeToString,
            response_deserializer=messages.ServerReflectionResponse.FromString,
        )
        requests = [
            messages.ServerReflectionRequest(list_services=""),
            messages.ServerReflectionRequest(file_containing_symbol="triserve.v1.Triserve"),
        ]
        listed, described = list(info(iter(requests), timeout=30))
    services = {s.name for s in listed.list_services_response.service}
    assert {"triserve.v1.Triserve", "grpc.health.v1.Health"} <= services
    assert "grpc.reflection.v1.ServerReflection" in services
    assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can describe it
