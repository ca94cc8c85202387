"""A storm of malformed calls: the status each kind gets, and that nothing else is harmed.

Every kind is sent raw (bytes on the wire, as any client could), so the server's parsing is
tested as well as its validation. None may get UNKNOWN or INTERNAL, and no status's details
may carry a Python traceback or an exception's repr. The ones the issue names:

    not_protobuf, truncated, invalid_utf8     bytes that do not parse as a GenerateRequest
    slo_negative, slo_zero, slo_nan           SLO targets no request can have
    max_tokens_huge (2**31), max_tokens_max   max_tokens past any context (uint32: a client's
                                              -1 arrives as 2**32 - 1)
    prompt_4mb, request_id_1mb                oversized fields, refused before tokenising
    image_bomb (7900 x 7900), image_53mb      oversized images, refused before decoding
    image_garbage, empty_prompt, unknown_model
"""

from __future__ import annotations

import io
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np

from proto.triserve.v1 import triserve_pb2 as pb

GENERATE = "/triserve.v1.Triserve/Generate"
INTERNALS = ("Traceback", 'File "', "Error(", "Exception(", ".py")
CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CallResult:
    kind: str
    status: str
    seconds: float
    leaks_internals: bool


def _valid(prompt: str = "hello there") -> pb.GenerateRequest:
    request = pb.GenerateRequest()
    request.raw.text = prompt
    request.sampling.max_tokens = 4
    return request


def _with_slo(ttft_ms: float) -> bytes:
    request = _valid()
    request.slo.ttft_ms = ttft_ms
    return request.SerializeToString()


def _with_image(png: bytes) -> bytes:
    request = _valid("<image> describe")
    request.raw.images.append(png)
    return request.SerializeToString()


def _invalid_utf8() -> bytes:
    # Field 1 (request_id, a string), length 2, bytes that are not UTF-8; then a valid prompt.
    return b"\x0a\x02\xff\xfe" + _valid().SerializeToString()


def _png(width: int, height: int, noisy: bool) -> bytes:
    from PIL import Image

    if noisy:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    else:
        image = Image.new("L", (width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1 if noisy else 9)
    return buffer.getvalue()


def malformed_kinds(big: bool = True) -> dict[str, bytes]:
    """Each kind's request bytes. `big=False` leaves out the two largest (a quick run)."""
    max_tokens_huge = _valid()
    max_tokens_huge.sampling.max_tokens = 2**31
    max_tokens_max = _valid()
    max_tokens_max.sampling.max_tokens = 2**32 - 1
    long_id = _valid()
    long_id.request_id = "x" * 2**20
    empty = _valid("")
    unknown_model = _valid()
    unknown_model.model = "no-such-model"
    kinds = {
        "not_protobuf": bytes(np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8)),
        "truncated": _with_image(_png(64, 64, noisy=True))[:-100],
        "invalid_utf8": _invalid_utf8(),
        "slo_negative": _with_slo(-5.0),
        "slo_zero": _with_slo(0.0),
        "slo_nan": _with_slo(math.nan),
        "max_tokens_huge": max_tokens_huge.SerializeToString(),
        "max_tokens_max": max_tokens_max.SerializeToString(),
        "request_id_1mb": long_id.SerializeToString(),
        "image_garbage": _with_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 100),
        "image_bomb": _with_image(_png(7900, 7900, noisy=False)),
        "empty_prompt": empty.SerializeToString(),
        "unknown_model": unknown_model.SerializeToString(),
    }
    if big:
        kinds["prompt_4mb"] = _valid("word " * (2**22 // 5)).SerializeToString()
        kinds["image_53mb"] = _with_image(_png(4300, 4300, noisy=True))
    return kinds


def _call(channel: grpc.Channel, kind: str, payload: bytes) -> CallResult:
    method = channel.unary_stream(
        GENERATE, request_serializer=None, response_deserializer=pb.GenerateResponse.FromString
    )
    started = time.monotonic()
    status, details = "OK", ""
    try:
        for _ in method(payload, timeout=CALL_TIMEOUT_S):
            pass
    except grpc.RpcError as error:
        status, details = error.code().name, error.details() or ""
    leaks = any(marker in details for marker in INTERNALS)
    return CallResult(kind, status, time.monotonic() - started, leaks)


def run_storm(
    address: str, num_calls: int, kinds: dict[str, bytes], concurrency: int = 8
) -> list[CallResult]:
    """`num_calls` calls, the kinds in turn, `concurrency` at a time, on one channel."""
    options = [("grpc.max_send_message_length", 256 * 2**20)]
    plan = list(itertools.islice(itertools.cycle(kinds.items()), num_calls))
    with grpc.insecure_channel(address, options=options) as channel:
        one: Callable = lambda item: _call(channel, *item)  # noqa: E731
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, plan))


def control_call(address: str) -> CallResult:
    """A well-formed request after the storm: it must be served."""
    with grpc.insecure_channel(address) as channel:
        return _call(channel, "control", _valid().SerializeToString())


def summary(results: list[CallResult]) -> dict:
    by_kind: dict[str, dict] = {}
    for result in results:
        entry = by_kind.setdefault(result.kind, {"statuses": Counter(), "max_s": 0.0})
        entry["statuses"][result.status] += 1
        entry["max_s"] = max(entry["max_s"], result.seconds)
    statuses = Counter(r.status for r in results)
    return {
        "calls": len(results),
        "statuses": dict(statuses),
        "unknown_or_internal": statuses["UNKNOWN"] + statuses["INTERNAL"],
        "leaking_internals": sum(r.leaks_internals for r in results),
        "by_kind": {
            kind: {"statuses": dict(e["statuses"]), "max_s": round(e["max_s"], 3)}
            for kind, e in by_kind.items()
        },
    }
