"""However a client leaves a stream (it cancels the call, closes its channel, or closes the
SDK's generator), the request ends `cancelled` and its workers stop decoding it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from cluster.client import TriserveClient, TriserveError, build_request
from proto.triserve.v1 import triserve_pb2 as pb
from proto.triserve.v1 import triserve_pb2_grpc as pb_grpc
from tests.cluster.conftest import ADMIN_TOKEN, API_TOKEN

MAX_TOKENS = 960  # far more than a cancel's few steps of latency
NUM_STREAMS_PER_WAY = 4
WAYS = ("call_cancel", "channel_close", "sdk_close")
PROMPT = "Tell me about the sea and the ships that sail on it."


def leave_mid_stream(address: str, way: str, request_id: str, num_chunks: int) -> int:
    """Read `num_chunks` chunks, then go away `way`; returns the tokens received."""
    request = dict(
        prompt=PROMPT, model="disagg", max_tokens=MAX_TOKENS, ignore_eos=True,
        request_id=request_id, ttft_ms=60_000, tpot_ms=60_000,
    )  # fmt: skip
    received = 0
    if way == "sdk_close":
        with TriserveClient(address, API_TOKEN, ADMIN_TOKEN) as client:
            stream = client.generate(**request)
            for chunk in stream:
                received += len(chunk.token_ids)
                num_chunks -= 1
                if num_chunks == 0:
                    break
            stream.close()
        return received
    metadata = [("application", "triserve"), ("authorization", f"Bearer {API_TOKEN}")]
    channel = grpc.insecure_channel(address)
    call = pb_grpc.TriserveStub(channel).Generate(build_request(**request), metadata=metadata)
    for response in call:
        received += len(response.token_ids)
        num_chunks -= 1
        if num_chunks == 0:
            break
    if way == "call_cancel":
        call.cancel()
    channel.close()
    return received


def decode_steps(trace: pb.Trace) -> int:
    return int(sum(e.values.get("count", 0) for e in trace.events if e.event == "decode_steps"))


def ended_trace(client: TriserveClient, request_id: str, timeout_s: float = 60.0) -> pb.Trace:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            trace = client.trace(request_id)
            if trace.state in ("finished", "failed", "cancelled"):
                return trace
        except TriserveError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
        assert time.monotonic() < deadline, f"{request_id} did not end within {timeout_s} s"
        time.sleep(0.2)


def cancelled_count(client: TriserveClient) -> int:
    return sum(c.cancelled for c in client.cluster_state().classes)


@pytest.mark.parametrize("way", WAYS)
def test_a_client_that_goes_away_cancels_its_request_on_every_worker(cluster, client, way):
    before = cancelled_count(client)
    streams = [(f"gone-{way}-{i}", 1 + i % 3) for i in range(NUM_STREAMS_PER_WAY)]
    with ThreadPoolExecutor(len(streams)) as pool:
        received = dict(
            zip(
                [request_id for request_id, _ in streams],
                pool.map(lambda s: leave_mid_stream(cluster.address, way, *s), streams),
                strict=True,
            )
        )
    for request_id, num_received in received.items():
        trace = ended_trace(client, request_id)
        assert trace.state == "cancelled", f"{request_id} {trace.state} after the client left"
        # Tokens decoded after the client left: a few steps of the cancel's latency, never
        # the rest of max_tokens.
        assert decode_steps(trace) - num_received < MAX_TOKENS // 4, (request_id, num_received)
    assert cancelled_count(client) - before == len(streams)

    def workers_idle():
        state = client.cluster_state()
        workers = [w for pool in state.pools for w in pool.workers]
        # Blocks other tests' session calls keep pinned (paused KV) are not these requests'.
        in_use = [w.kv_blocks_used - w.pinned_blocks for w in workers]
        return state.requests_in_flight == 0 and all(n == 0 for n in in_use)

    deadline = time.monotonic() + 60.0
    while not workers_idle():
        assert time.monotonic() < deadline, "workers still hold blocks of cancelled requests"
        time.sleep(0.2)
