"""Clients that leave mid-stream, in each way a client can leave, and what the server did.

    call.cancel()      the gRPC call object's cancel
    channel.close()    the client drops its whole connection
    generator.close()  the SDK's `TriserveClient.generate` iterator closed early

Each stream asks for `max_tokens` (EOS ignored) and leaves after a few tokens. Afterwards each
request's trace must say `cancelled`, with few decode steps beyond the tokens the client had;
one that says `finished` ran to its limit for nobody. Then every worker must go idle: a request
the scheduler ended but a worker kept would keep it busy.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from cluster.client import TriserveClient, build_request
from cluster.state_messages import DONE_STATES
from proto.triserve.v1 import triserve_pb2_grpc as pb_grpc

WAYS = ("call_cancel", "channel_close", "generator_close")
TRACE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CancelRecord:
    way: str
    request_id: str
    tokens_at_cancel: int
    state: str  # the trace's final state
    server_tokens: int  # tokens the server generated: the first plus its decode steps


def _leave(address: str, way: str, request: dict, after_tokens: int) -> int:
    """Stream `request` until `after_tokens` tokens arrived, then leave `way`; tokens seen."""
    seen = 0
    if way == "generator_close":
        with TriserveClient(address) as client:
            stream = client.generate(**request)
            for chunk in stream:
                seen += len(chunk.token_ids)
                if seen >= after_tokens:
                    break
            stream.close()
        return seen
    channel = grpc.insecure_channel(address)
    call = pb_grpc.TriserveStub(channel).Generate(build_request(**request))
    try:
        for response in call:
            seen += len(response.token_ids)
            if seen >= after_tokens:
                break
    finally:
        if way == "call_cancel":
            call.cancel()
        channel.close()
    return seen


def _server_view(client, request_id: str) -> tuple[str, int]:
    """The trace's final state and the tokens the server generated for it."""
    deadline = time.monotonic() + TRACE_TIMEOUT_S
    while True:
        trace = client.trace(request_id)
        if trace.state in DONE_STATES or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    steps = sum(int(e.values.get("count", 0)) for e in trace.events if e.event == "decode_steps")
    has_first = any(e.event == "first_token" for e in trace.events)
    return trace.state, steps + int(has_first)


def run_cancels(
    address: str, prompts: list[str], max_tokens: int, seed: int, concurrency: int = 8
) -> list[CancelRecord]:
    """One stream per prompt, ways in turn, each leaving after 1-16 tokens."""
    rng = random.Random(seed)
    run_id = f"{rng.getrandbits(32):08x}"
    plans = [
        (WAYS[i % len(WAYS)], f"cancel-{run_id}-{i}", prompt, rng.randint(1, 16))
        for i, prompt in enumerate(prompts)
    ]

    def one(plan) -> tuple[str, str, int]:
        way, request_id, prompt, after = plan
        request = dict(
            prompt=prompt,
            request_id=request_id,
            max_tokens=max_tokens,
            ignore_eos=True,
            admission="best_effort",
        )
        return way, request_id, _leave(address, way, request, after)

    with ThreadPoolExecutor(concurrency) as pool:
        left = list(pool.map(one, plans))
    records = []
    with TriserveClient(address, timeout_s=30.0) as client:
        for way, request_id, seen in left:
            state, server_tokens = _server_view(client, request_id)
            records.append(CancelRecord(way, request_id, seen, state, server_tokens))
    return records


def seconds_until_idle(client, timeout_s: float = 60.0) -> float | None:
    """Seconds until no worker runs or waits on anything (None: not within `timeout_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        pools = client.cluster_state().pools
        if all(w.running == 0 and w.waiting == 0 for p in pools for w in p.workers):
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def summary(records: list[CancelRecord], max_tokens: int) -> dict:
    by_way = {}
    for way in WAYS:
        mine = [r for r in records if r.way == way]
        beyond = sorted(max(0, r.server_tokens - r.tokens_at_cancel) for r in mine)
        by_way[way] = {
            "streams": len(mine),
            "cancelled": sum(r.state == "cancelled" for r in mine),
            "ran_to_limit": sum(r.server_tokens >= max_tokens for r in mine),
            "other_states": sorted({r.state for r in mine} - {"cancelled"}),
            "server_tokens_beyond_client_max": beyond[-1] if beyond else None,
            "server_tokens_beyond_client_p50": beyond[len(beyond) // 2] if beyond else None,
        }
    return {
        "streams": len(records),
        "cancelled": sum(r.state == "cancelled" for r in records),
        "ran_to_limit": sum(r.server_tokens >= max_tokens for r in records),
        "by_way": by_way,
    }
