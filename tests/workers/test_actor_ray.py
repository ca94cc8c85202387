"""Worker actors on a local Ray cluster: arrays move through the object store, verified.

Three actors (encode, prefill, decode) serve every test of this module; the last test retires
the decode actor.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from cluster.config import ClusterConfig
from cluster.config_sources import parse_pools
from cluster.pools import PoolManager, RayWorkerLauncher
from tests.workers.support import (
    GREEDY,
    colocated_tokens,
    finish_reason,
    has,
    is_finished,
    token_ids,
)
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import DecodeJob, PrefillJob, TransferRef, WorkerEvents
from workers.contract.worker_config import WorkerConfig
from workers.ray_client import WorkerUnavailableError
from workers.transport import InProcessTransport
from workers.worker import WorkerCore

DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def run(loop):
    return lambda coroutine: loop.run_until_complete(asyncio.wait_for(coroutine, DEADLINE_S))


@pytest.fixture(scope="module")
def manager(ray_cluster, tiny_model_dir, run):
    pools = tuple(
        replace(pool, num_kv_blocks=32, torch_threads=1)
        for pool in parse_pools("encode=1,prefill=1,decode=1")
    )
    config = ClusterConfig(pools=pools, fetch_timeout_s=10.0, call_timeout_s=20.0)
    manager = PoolManager(config, RayWorkerLauncher(config, ready_timeout_s=DEADLINE_S))
    run(manager.start())
    yield manager
    run(manager.shutdown())


async def poll_until_async(client, is_done) -> list[WorkerEvents]:
    seen: list[WorkerEvents] = []
    while not is_done(seen):
        seen.append(await client.poll(0.5))
    return seen


def colocated_run(tiny_model_dir, request) -> list[int]:
    config = WorkerConfig(worker_id="epd-0", engine=EngineConfig(model_dir=str(tiny_model_dir)))
    worker = WorkerCore(config, InProcessTransport())
    try:
        return colocated_tokens(worker, request, "r1")
    finally:
        worker.close()


async def encode_and_prefill(manager, request, request_id):
    [encoder], [prefiller] = manager.workers("encode"), manager.workers("prefill")
    await encoder.submit_encode(request.encode_job(request_id))
    seen = await poll_until_async(encoder, has("encodes"))
    [encoded] = [done for events in seen for done in events.encodes]
    await prefiller.submit_prefill(
        PrefillJob(
            request_id=request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling_params=GREEDY,
            images=encoded.embeddings,
            decode_here=False,
            expected_epochs={encoder.worker_id: seen[-1].epoch},
        )
    )
    seen = await poll_until_async(prefiller, has("prefills"))
    [prefill] = [done for events in seen for done in events.prefills]
    await encoder.release([e.ref.transfer_id for e in encoded.embeddings])
    return prefill, seen[-1].epoch


def test_actors_pass_a_request_through_the_object_store_with_the_colocated_tokens(
    manager, run, tiny_model_dir, cat_request
):
    expected = colocated_run(tiny_model_dir, cat_request)

    async def disaggregated():
        prefill, prefill_epoch = await encode_and_prefill(manager, cat_request, "r1")
        [prefiller], [decoder] = manager.workers("prefill"), manager.workers("decode")
        await decoder.submit_decode(
            DecodeJob(
                request_id="r1",
                prompt_token_ids=cat_request.prompt_token_ids,
                sampling_params=GREEDY,
                first_token_id=prefill.first_token_id,
                image_spans=prefill.image_spans,
                kv=prefill.kv,
                kv_dtype=prefill.kv_dtype,
                expected_epochs={prefiller.worker_id: prefill_epoch},
            )
        )
        seen = await poll_until_async(decoder, is_finished("r1"))
        consumed = [c.transfer_id for events in seen for c in events.consumed]
        await prefiller.release(consumed)
        return prefill, seen, await prefiller.is_idle()

    prefill, decoded, prefiller_is_idle = run(disaggregated())
    assert [prefill.first_token_id] + token_ids(decoded, "r1") == expected
    assert finish_reason(decoded, "r1") == "length"
    assert [c.transfer_id for e in decoded for c in e.consumed] == [prefill.kv.transfer_id]
    assert prefiller_is_idle  # released: the object store no longer holds its KV


def test_a_decode_actor_rejects_kv_from_a_stale_epoch(manager, run, cat_request):
    async def stale():
        prefill, prefill_epoch = await encode_and_prefill(manager, cat_request, "r2")
        [prefiller], [decoder] = manager.workers("prefill"), manager.workers("decode")
        await decoder.submit_decode(
            DecodeJob(
                request_id="r2",
                prompt_token_ids=cat_request.prompt_token_ids,
                sampling_params=GREEDY,
                first_token_id=prefill.first_token_id,
                image_spans=prefill.image_spans,
                kv=prefill.kv,
                kv_dtype=prefill.kv_dtype,
                expected_epochs={prefiller.worker_id: prefill_epoch - 1},
            )
        )
        seen = await poll_until_async(decoder, has("failures"))
        await prefiller.release([prefill.kv.transfer_id])
        return seen, await decoder.load()

    seen, load = run(stale())
    failures = [f for events in seen for f in events.failures]
    assert [(f.request_id, f.stage, f.retriable) for f in failures] == [("r2", "decode", True)]
    assert "stale" in failures[0].reason
    assert (load.num_running, load.num_kv_blocks_used) == (0, 0)


def test_scaling_down_drains_the_decode_actor_then_retires_it(manager, run):
    [decoder] = manager.workers("decode")

    async def scale_down():
        change = await manager.scale("decode", 0)
        kv = TransferRef(
            transfer_id="prefill-0/x",
            handle=[None],
            nbytes=0,
            checksum=0,
            producer_id="prefill-0",
            producer_epoch=1,
        )
        await decoder.submit_decode(
            DecodeJob(
                request_id="late",
                prompt_token_ids=[5, 6],
                sampling_params=GREEDY,
                first_token_id=7,
                image_spans=[],
                kv=kv,
                kv_dtype="float32",
            )
        )
        seen = await poll_until_async(decoder, has("failures"))
        return change, seen, await manager.retire_idle()

    change, seen, retired = run(scale_down())
    assert (change.added, change.draining, retired) == ([], ["decode-0"], ["decode-0"])
    assert [(f.request_id, f.retriable, f.reason) for e in seen for f in e.failures] == [
        ("late", True, "decode-0 is draining")
    ]
    # ray.kill returns before the actor is gone: poll until calls fail, with a deadline.
    deadline = time.monotonic() + 30
    while True:
        try:
            run(decoder.load())
        except WorkerUnavailableError:
            break
        assert time.monotonic() < deadline, "the retired actor still answers"
        time.sleep(0.1)
