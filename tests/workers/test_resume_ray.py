"""A decode worker killed mid-stream on a real Ray cluster: its requests resume on the other
decode worker, and every stream ends with exactly the tokens an uninterrupted colocated engine
writes, greedy and seeded alike.

The scheduler runs in this process over Ray worker actors (one prefill, two decode) on the
session's Ray cluster. The kill is `ray.kill`; the scheduler notices through the failed poll
(scheduler/poller.py: the worker is suspected and its requests fail over).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from cluster.config import ClusterConfig
from cluster.config_sources import parse_pools
from cluster.pools import PoolManager, RayWorkerLauncher
from scheduler.config import SchedulerConfig
from scheduler.request import RequestSpec
from scheduler.scheduler import Scheduler
from scheduler.trace_events import EventName
from workers.contract.engine_config import EngineConfig
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine

DEADLINE_S = 300.0
NUM_STREAMS = 8
MAX_TOKENS = 96
KILL_AFTER_TOKENS = 6  # every stream has at least this many when the worker dies


def request_specs() -> list[RequestSpec]:
    specs = []
    for i in range(NUM_STREAMS):
        params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, seed=100 + i)
        if i % 4 in (1, 2):  # placement alternates decode workers: each gets both kinds
            params = replace(params, temperature=0.9, top_p=0.95)
        prompt = [1, *range(20 + 7 * i, 40 + 9 * i)]
        specs.append(RequestSpec(f"r{i}", "tiny", prompt, sampling_params=params))
    return specs


def reference_tokens(model_dir, specs: list[RequestSpec]) -> dict[str, list[int]]:
    engine = Engine(EngineConfig(model_dir=str(model_dir)))
    for spec in specs:
        engine.add_request(spec.request_id, spec.prompt_token_ids, spec.sampling_params)
    return {rid: done.token_ids for rid, done in engine.run_to_completion().items()}


def decode_worker_of(scheduler: Scheduler, request_id: str) -> str | None:
    trace = scheduler.trace(request_id)
    starts = [e for e in trace.events if e.name == EventName.DECODE_START] if trace else []
    return starts[-1].attrs.get("worker") if starts else None


async def serve_and_kill(specs: list[RequestSpec]) -> tuple[dict[str, list[int]], Scheduler, str]:
    import ray

    pools = tuple(
        replace(pool, num_kv_blocks=256, torch_threads=1, profile_at_start=False, max_restarts=0)
        for pool in parse_pools("prefill=1,decode=2")
    )
    config = ClusterConfig(pools=pools, fetch_timeout_s=10.0, call_timeout_s=20.0)
    launcher = RayWorkerLauncher(
        config, cluster_id=f"resume-{uuid.uuid4().hex[:8]}", ready_timeout_s=DEADLINE_S
    )
    manager = PoolManager(config, launcher)
    await manager.start()
    scheduler = Scheduler(config=SchedulerConfig(policy="fcfs", max_retries=2))
    try:
        for worker in manager.workers():
            await scheduler.add_worker(worker)
        received: dict[str, list[int]] = {spec.request_id: [] for spec in specs}

        async def read(spec: RequestSpec) -> None:
            async for output in await scheduler.generate(spec):
                received[spec.request_id] += output.token_ids

        readers = [asyncio.create_task(read(spec)) for spec in specs]
        while min(len(tokens) for tokens in received.values()) < KILL_AFTER_TOKENS:
            await asyncio.sleep(0.005)
        decoding = [decode_worker_of(scheduler, spec.request_id) for spec in specs]
        victim = max(set(decoding) - {None}, key=decoding.count)
        [handle] = [w.handle for w in manager.workers("decode") if w.worker_id == victim]
        ray.kill(handle, no_restart=True)
        await asyncio.gather(*readers)
        return received, scheduler, victim
    finally:
        await scheduler.close()
        await manager.shutdown()


def test_streams_on_a_killed_decode_worker_end_with_the_uninterrupted_tokens(
    ray_cluster, tiny_model_dir
):
    specs = request_specs()
    expected = reference_tokens(tiny_model_dir, specs)
    assert all(len(tokens) == MAX_TOKENS for tokens in expected.values())

    received, scheduler, victim = asyncio.run(asyncio.wait_for(serve_and_kill(specs), DEADLINE_S))

    assert received == expected  # token for token: no gap, no duplicate, no other token
    redriven = {}
    for spec in specs:
        trace = scheduler.trace(spec.request_id)
        if trace.event(EventName.REDRIVE) is not None:
            redriven[spec.request_id] = trace.event(EventName.REDRIVE).attrs["reason"]
    assert redriven, f"no stream was decoding on {victim}"
    assert all(f"worker {victim}" in reason for reason in redriven.values())
    seeded = {spec.request_id for spec in specs if not spec.sampling_params.is_greedy}
    assert set(redriven) & seeded and set(redriven) - seeded  # greedy and seeded resumed
