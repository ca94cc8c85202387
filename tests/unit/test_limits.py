"""What the ingress refuses before any expensive work, and how each refusal reads (no server)."""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib

import grpc
import pytest
from PIL import Image

from cluster.client import build_request
from cluster.config import ClusterConfig, ConfigError
from cluster.errors import cut, log_failure, status_for
from cluster.limits import LimitsConfig
from cluster.request_builder import ModelFrontend, RequestBuilder, parse_message
from cluster.serve_grpc import ClientErrorLogFilter, triserve_handlers
from proto.triserve.v1 import triserve_pb2 as pb
from workers.contract.errors import InvalidImageError, InvalidRequestError, LimitExceededError
from workers.contract.images import decode_image

CONTEXT = 2048


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels in a few dozen bytes (its data is empty)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def builder(**limits) -> RequestBuilder:
    model = ModelFrontend(
        name="m",
        tokenizer=None,
        detokenizer=None,
        prompt_builder=None,
        max_model_len=CONTEXT,
        tool_format=None,
        grammar_checker=None,
    )
    return RequestBuilder({"m": model}, LimitsConfig(**limits))


def refusal(request: pb.GenerateRequest, **limits) -> str:
    with pytest.raises(InvalidRequestError) as error:
        builder(**limits).check(request)
    assert status_for(error.value)[0] == grpc.StatusCode.INVALID_ARGUMENT
    return str(error.value)


def test_an_over_long_prompt_is_refused_by_its_characters_naming_the_limit():
    message = refusal(build_request(prompt="x" * 4 * 2**20))
    assert message == (
        "prompt has 4,194,304 characters; the limit is limits.max_prompt_chars = 1,048,576"
    )
    chat = build_request(messages=[{"role": "user", "content": "y" * 11}])
    assert "prompt has 15 characters" in refusal(chat, max_prompt_chars=10)  # role counts


def test_too_many_images_or_a_too_large_image_is_refused_before_decoding():
    assert "request has 3 images; the limit is limits.max_images = 2" in refusal(
        build_request(prompt="<image>" * 3, images=[b"not even an image"] * 3), max_images=2
    )
    message = refusal(build_request(prompt="<image>", images=[b"x" * 101]), max_image_bytes=100)
    assert message == "image 0 has 101 bytes; the limit is limits.max_image_bytes = 100"


@pytest.mark.parametrize("value", [-5.0, 0.0, math.nan, math.inf])
@pytest.mark.parametrize("field", ["ttft_ms", "tpot_ms"])
def test_slo_targets_that_are_not_positive_and_finite_are_invalid_and_named(field, value):
    message = refusal(build_request(prompt="hi", **{field: value}))
    assert message.startswith(f"slo.{field} must be a positive, finite number of milliseconds")


@pytest.mark.parametrize("max_tokens", [2**31, 2**32 - 1, CONTEXT + 1])
def test_max_tokens_above_the_context_is_refused(max_tokens):
    message = refusal(build_request(prompt="hi", max_tokens=max_tokens))
    assert f"sampling.max_tokens asks for {max_tokens:,} tokens" in message
    assert "the limit is limits.max_tokens (null: the model's context) = 2,048" in message
    assert "= 100" in refusal(build_request(prompt="hi", max_tokens=101), max_tokens=100)


def test_max_tokens_up_to_the_limit_and_slo_targets_that_are_positive_pass():
    request = build_request(prompt="hi", max_tokens=CONTEXT, ttft_ms=0.5, tpot_ms=50)
    assert builder().check(request).name == "m"


def test_an_over_long_request_id_is_refused():
    message = refusal(build_request(prompt="hi", request_id="r" * 257))
    assert (
        message == "request_id has 257 characters; the limit is limits.max_request_id_chars = 256"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff\xff not a protobuf",
        build_request(prompt="hello there", request_id="abc").SerializeToString()[:-3],
        build_request(prompt="hello", request_id="abc")
        .SerializeToString()
        .replace(b"hello", b"he\xff\xfeo"),
    ],
    ids=["not_a_protobuf", "truncated", "invalid_utf8"],
)
def test_bytes_that_are_not_a_generate_request_are_invalid_argument(raw):
    with pytest.raises(InvalidRequestError, match="not a valid triserve.v1.GenerateRequest") as e:
        parse_message(pb.GenerateRequest, raw, 2**20)
    assert "Traceback" not in str(e.value) and "google" not in str(e.value)


def test_request_bytes_are_counted_before_parsing():
    with pytest.raises(LimitExceededError, match="limits.max_request_bytes = 10"):
        parse_message(pb.GenerateRequest, b"\xff" * 11, 10)  # never parsed
    request = build_request(prompt="hi")
    assert parse_message(pb.GenerateRequest, request.SerializeToString(), 100) == request
    assert parse_message(pb.GenerateRequest, request, 100) is request


def test_an_image_over_the_pixel_limit_is_refused_from_its_header():
    with pytest.raises(LimitExceededError) as error:
        decode_image(png_header(7900, 7900), 4096 * 4096, "limits.max_image_pixels")
    assert str(error.value) == (
        "image of 7,900x7,900 has 62,410,000 pixels; "
        "the limit is limits.max_image_pixels = 16,777,216"
    )
    with pytest.raises(LimitExceededError, match="limits.max_image_pixels"):  # PIL's guard
        decode_image(png_header(100_000, 100_000), 4096 * 4096, "limits.max_image_pixels")
    with pytest.raises(InvalidImageError, match="cannot decode"):  # under it: still a bad PNG
        decode_image(png_header(64, 64), 4096 * 4096, "limits.max_image_pixels")
    assert decode_image(small_png(), 64, "limits.max_image_pixels").size == (8, 8)


def test_limits_come_from_the_configuration_and_bad_values_name_the_key():
    config = ClusterConfig.from_dict({"limits": {"max_images": 3, "max_prompt_tokens": 100}})
    assert (config.limits.max_images, config.limits.max_prompt_tokens) == (3, 100)
    assert ClusterConfig().limits == LimitsConfig()
    with pytest.raises(ConfigError, match="limits.max_images must be an integer >= 1"):
        ClusterConfig.from_dict({"limits": {"max_images": 0}})
    with pytest.raises(ConfigError, match=r"limits.max_tokens: expected int \| None"):
        ClusterConfig.from_dict({"limits": {"max_tokens": "lots"}})


def test_prompt_token_limit_is_the_configured_one_or_the_context_less_one():
    assert LimitsConfig().prompt_token_limit(CONTEXT)[0] == CONTEXT - 1
    assert LimitsConfig(max_prompt_tokens=100).prompt_token_limit(CONTEXT) == (
        100,
        "limits.max_prompt_tokens",
    )
    assert LimitsConfig(max_prompt_tokens=10**6).prompt_token_limit(CONTEXT)[0] == CONTEXT - 1


def test_a_client_error_logs_one_line_with_long_fields_cut(caplog):
    logger = logging.getLogger("triserve.test_limits")
    error = LimitExceededError("request_id has 1,048,576 characters; the limit is ...")
    with caplog.at_level(logging.INFO, logger=logger.name):
        log_failure(logger, error, grpc.StatusCode.INVALID_ARGUMENT, str(error), "i" * 2**20)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in record.getMessage()
    assert len(record.getMessage()) < 600
    assert "INVALID_ARGUMENT: request_id has 1,048,576 characters" in record.getMessage()
    assert cut("i" * 200) == "i" * 128 + "... (72 more characters)"


def test_an_internal_error_keeps_its_traceback(caplog):
    logger = logging.getLogger("triserve.test_limits")
    try:
        raise KeyError("bug")
    except KeyError as error:
        with caplog.at_level(logging.INFO, logger=logger.name):
            log_failure(logger, error, grpc.StatusCode.INTERNAL, "internal error", "r1")
    (record,) = caplog.records
    assert record.exc_info is not None and "request 'r1': INTERNAL" in record.getMessage()


class _StatusError(Exception):  # the shape of Serve's gRPCStatusError
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.grpc_code, self.grpc_details = code, details


def _record(error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "ray.serve", logging.ERROR, __file__, 1, "Request failed.", (), (type(error), error, None)
    )


def test_serve_logs_of_a_client_error_become_one_line_or_none():
    refused = _StatusError(grpc.StatusCode.INVALID_ARGUMENT, "prompt has " + "x" * 10_000)
    proxy_record = _record(refused)
    assert ClientErrorLogFilter(drop=False).filter(proxy_record)
    assert proxy_record.exc_info is None and len(proxy_record.getMessage()) < 400
    assert proxy_record.levelno == logging.WARNING
    assert proxy_record.getMessage().startswith("INVALID_ARGUMENT: prompt has x")
    assert not ClientErrorLogFilter(drop=True).filter(_record(refused))
    internal = _record(_StatusError(grpc.StatusCode.INTERNAL, "bug"))
    assert ClientErrorLogFilter(drop=True).filter(internal) and internal.exc_info is not None
    other = _record(ValueError("not a status error"))
    assert ClientErrorLogFilter(drop=True).filter(other) and other.exc_info is not None


def test_every_triserve_method_reaches_the_ingress_as_bytes_with_its_response_serializer():
    from unittest.mock import Mock

    from proto.triserve.v1 import triserve_pb2_grpc

    generated = {}
    server = Mock(add_registered_method_handlers=lambda name, handlers: generated.update(handlers))
    triserve_pb2_grpc.add_TriserveServicer_to_server(Mock(), server)
    ours = triserve_handlers(Mock())
    assert sorted(ours) == sorted(generated)
    for name, handler in ours.items():
        assert handler.request_deserializer is None
        assert handler.response_serializer == generated[name].response_serializer
        assert handler.response_streaming == generated[name].response_streaming
