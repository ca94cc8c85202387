"""Session benchmark: multi-turn conversations over three modes, side by side on one cluster.

    python -m bench.sessions [--preset small|tiny] [--pools encode=1,prefill=1,decode=1]
                             [--sessions N] [--turns N] [--concurrency N] [--json OUT] [--quick]

Starts its own cluster (HTTP API on a free port), then runs the same sessions (the same shapes:
turn counts, lengths, images, pauses; other words, so no mode hits another's prefix cache) in
each mode of drivers.py, one mode after another, `--concurrency` sessions at a time, the
cluster idle in between. While a mode runs, the pinned KV blocks of every worker are sampled
from the cluster state. Targets (small preset): from turn 4 on, the responses mode's TTFT p50
at least 3x lower than stateless, its re-prefilled history under 5 % of stateless's, and at
least 90 % of its prompt tokens cached.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from bench.common import output
from bench.common.cluster import init_ray, private_cluster_config, start_cluster, stop_cluster
from bench.sessions.drivers import MODES, run_session
from bench.sessions.report import markdown_report, summarize
from bench.sessions.workload import SessionShape, sessions

PINNED_SAMPLE_S = 0.5
log = partial(output.log, "bench.sessions")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--pools", default="encode=1,prefill=1,decode=1")
    parser.add_argument("--sessions", type=int, help="sessions per mode (default 12)")
    parser.add_argument("--turns", type=int, help="turns per session (default 6)")
    parser.add_argument("--concurrency", type=int, default=3, help="sessions at a time")
    parser.add_argument("--modes", default=",".join(MODES), help="a subset of " + ",".join(MODES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every number and the machine here")
    parser.add_argument("--quick", action="store_true", help="a tiny run, for smoke tests")
    return parser.parse_args(argv)


async def run_mode(http_address: str, grpc_address: str, mode: str, model: str, shape, args):
    """Every session of one mode; returns (turn records, pinned-block samples)."""
    import openai

    from cluster.client import AsyncTriserveClient

    client = openai.AsyncOpenAI(
        base_url=f"http://{http_address}/v1", api_key="none", timeout=600.0, max_retries=0
    )
    words_seed = args.seed * 10 + MODES.index(mode) + 1
    limit = asyncio.Semaphore(args.concurrency)
    started = time.perf_counter()

    async def one(session):
        async with limit:
            return await run_session(client, mode, model, session, shape.output_tokens)

    samples: list[tuple[float, int]] = []
    async with AsyncTriserveClient(grpc_address, timeout_s=10.0) as grpc_client:
        sampler = asyncio.create_task(_sample_pinned(grpc_client, started, samples))
        try:
            per_session = await asyncio.gather(
                *(one(s) for s in sessions(shape, args.seed, words_seed))
            )
        finally:
            sampler.cancel()
        await _wait_idle(grpc_client)
    await client.close()
    return [record for records in per_session for record in records], samples


async def _sample_pinned(client, started: float, samples: list) -> None:
    while True:
        state = await client.cluster_state()
        pinned = sum(w.pinned_blocks for pool in state.pools for w in pool.workers)
        samples.append((round(time.perf_counter() - started, 2), pinned))
        await asyncio.sleep(PINNED_SAMPLE_S)


async def _wait_idle(client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await client.cluster_state()).requests_in_flight == 0:
            return
        await asyncio.sleep(0.2)


def run_benchmark(args: argparse.Namespace) -> dict:
    import ray
    import torch

    from bench.common.machine import describe_machine

    started = time.perf_counter()
    shape = SessionShape.quick() if args.quick else SessionShape()
    shape = replace(shape, **{k: v for k, v in (("num_sessions", args.sessions),
                                                 ("num_turns", args.turns)) if v})  # fmt: skip
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    started_ray = init_ray(object_store_mb=512)
    cluster = start_cluster(private_cluster_config(args.preset, args.pools))
    results = {"records": {}, "pinned": {}}
    try:
        for mode in modes:
            log(f"{mode}: {shape.num_sessions} sessions x {shape.num_turns} turns")
            records, pinned = asyncio.run(
                run_mode(cluster.http_address, cluster.address, mode, args.preset, shape, args)
            )
            results["records"][mode] = [asdict(r) for r in records]
            results["pinned"][mode] = pinned
        machine = describe_machine(torch.device("cpu"), with_ray=True)
    finally:
        for problem in stop_cluster(cluster):
            log(problem)
        if started_ray:
            ray.shutdown()
    results.update(
        config={
            **vars(args),
            "json": str(args.json) if args.json else None,
            "shape": asdict(shape),
        },
        machine=machine,
        summary=summarize(results["records"], results["pinned"]),
        runtime_s=time.perf_counter() - started,
    )
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run_benchmark(args)
    output.publish("bench.sessions", results, markdown_report(results), args.json)
    return results
