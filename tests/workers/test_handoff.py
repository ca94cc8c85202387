"""A request handed from worker to worker gets exactly the tokens it gets on one worker."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from tests.workers.support import (
    GREEDY,
    colocated_tokens,
    finish_reason,
    has,
    is_finished,
    poll_until,
    token_ids,
    wait_for,
)
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import DecodeJob, EmbeddingInput, PrefillJob, TokenDelta
from workers.contract.worker_config import WorkerConfig
from workers.engine.engine import Engine
from workers.local_client import LocalWorkerClient
from workers.stage_runner import StageRunner
from workers.transport import TransferError
from workers.worker import WorkerCore


def test_encode_prefill_decode_on_three_workers_gives_the_colocated_tokens(
    start_worker, cat_request
):
    expected = colocated_tokens(start_worker("epd-0", "EPD"), cat_request, "r1")
    assert len(expected) == GREEDY.max_tokens
    encoder, prefiller, decoder = (
        start_worker("e-0", "E"), start_worker("p-0", "P"), start_worker("d-0", "D")
    )  # fmt: skip

    encoder.submit_encode(cat_request.encode_job("r1"))
    [encoded] = [
        done for events in poll_until(encoder.poll, has("encodes")) for done in events.encodes
    ]
    [embedding] = encoded.embeddings
    assert embedding.image_hash == cat_request.image.image_hash
    prefiller.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=cat_request.prompt_token_ids,
            sampling_params=GREEDY,
            images=encoded.embeddings,
            decode_here=False,
            expected_epochs={"e-0": encoder.epoch},
        )
    )
    seen = poll_until(prefiller.poll, has("prefills"))
    [prefill] = [done for events in seen for done in events.prefills]
    consumed = [c for events in seen for c in events.consumed]
    assert [(c.request_id, c.transfer_id, c.producer_id, c.nbytes) for c in consumed] == [
        ("r1", embedding.ref.transfer_id, "e-0", 16 * 64 * 4)  # [image_tokens, hidden] fp32
    ]
    assert (prefill.first_token_id, prefill.finish_reason, prefill.kv_dtype) == (
        expected[0],
        None,
        "float32",
    )
    assert prefill.kv.nbytes == 2 * 2 * len(cat_request.prompt_token_ids) * 2 * 16 * 4
    assert [s.image_hash for s in prefill.image_spans] == [cat_request.image.image_hash]
    assert not [d for events in seen for d in events.tokens]  # the first token rides PrefillDone

    decoder.submit_decode(
        DecodeJob(
            request_id="r1",
            prompt_token_ids=cat_request.prompt_token_ids,
            sampling_params=GREEDY,
            first_token_id=prefill.first_token_id,
            image_spans=prefill.image_spans,
            kv=prefill.kv,
            kv_dtype=prefill.kv_dtype,
            expected_epochs={"p-0": prefiller.epoch},
        )
    )
    decoded = poll_until(decoder.poll, is_finished("r1"))
    assert [prefill.first_token_id] + token_ids(decoded, "r1") == expected
    assert finish_reason(decoded, "r1") == "length"
    assert [c.transfer_id for events in decoded for c in events.consumed] == [
        prefill.kv.transfer_id
    ]


def test_embeddings_kept_for_a_prefill_on_the_same_worker_never_enter_the_transport(
    start_worker, transport, cat_request
):
    worker = start_worker("epd-0", "EPD")
    worker.submit_encode(cat_request.encode_job("r1", export=False))
    [encoded] = [d for events in poll_until(worker.poll, has("encodes")) for d in events.encodes]

    assert encoded.embeddings == [EmbeddingInput(image_hash=cat_request.image.image_hash, ref=None)]
    assert (transport.held("epd-0"), worker.is_idle()) == ([], True)
    assert worker.load().embedding_cache_keys == [cat_request.image.image_hash]


def test_embeddings_a_too_small_cache_cannot_keep_are_exported_anyway(
    start_worker, transport, cat_request
):
    worker = start_worker("epd-0", "EPD", embedding_cache_size=0)
    worker.submit_encode(cat_request.encode_job("r1", export=False))
    [encoded] = [d for events in poll_until(worker.poll, has("encodes")) for d in events.encodes]

    [embedding] = encoded.embeddings
    assert transport.held("epd-0") == [embedding.ref.transfer_id]


def test_a_prefill_worker_reuses_embeddings_it_imported_before(start_worker, cat_request):
    encoder, prefiller = start_worker("e-0", "E"), start_worker("p-0", "PD")
    encoder.submit_encode(cat_request.encode_job("turn-1"))
    [encoded] = [d for events in poll_until(encoder.poll, has("encodes")) for d in events.encodes]
    prompt = cat_request.prompt_token_ids
    prefiller.submit_prefill(
        PrefillJob(
            request_id="turn-1",
            prompt_token_ids=prompt,
            sampling_params=GREEDY,
            images=encoded.embeddings,
            decode_here=True,
            expected_epochs={"e-0": encoder.epoch},
        )
    )
    first = token_ids(poll_until(prefiller.poll, is_finished("turn-1")), "turn-1")
    assert prefiller.load().embedding_cache_keys == [cat_request.image.image_hash]

    cached = [EmbeddingInput(image_hash=cat_request.image.image_hash, ref=None)]
    prefiller.submit_prefill(
        PrefillJob(
            request_id="turn-2",
            prompt_token_ids=prompt,
            sampling_params=GREEDY,
            images=cached,
            decode_here=True,
        )
    )
    assert token_ids(poll_until(prefiller.poll, is_finished("turn-2")), "turn-2") == first


def test_tokens_of_concurrent_requests_arrive_together_one_delta_per_request(start_worker):
    worker = start_worker("epd-0", "EPD")
    prompts = {"a": list(range(5, 25)), "b": list(range(40, 55))}
    for request_id, prompt in prompts.items():
        worker.submit_prefill(
            PrefillJob(
                request_id=request_id,
                prompt_token_ids=prompt,
                sampling_params=GREEDY,
                images=[],
                decode_here=True,
            )
        )
    wait_for(lambda: worker.load().num_active == 0)
    [everything] = [worker.poll(0.0)]
    assert [(d.request_id, len(d.token_ids), d.finish_reason) for d in everything.tokens] == [
        ("a", 8, "length"), ("b", 8, "length")
    ]  # fmt: skip
    assert everything.step_ms > 0

    for request_id, prompt in prompts.items():
        worker.submit_prefill(
            PrefillJob(
                request_id=f"{request_id}2",
                prompt_token_ids=prompt,
                sampling_params=GREEDY,
                images=[],
                decode_here=True,
            )
        )
    streamed = poll_until(worker.poll, lambda s: is_finished("a2")(s) and is_finished("b2")(s))
    for events in streamed:
        request_ids = [d.request_id for d in events.tokens]
        assert len(request_ids) == len(set(request_ids))  # one delta per request per message
    assert any({"a2", "b2"} <= {d.request_id for d in events.tokens} for events in streamed)
    for request_id in ("a", "b"):
        delta = next(d for d in everything.tokens if d.request_id == request_id)
        assert token_ids(streamed, f"{request_id}2") == delta.token_ids


def test_a_late_poll_gets_every_step_in_one_message_with_exact_step_counts(start_worker):
    worker = start_worker("pd-0", "PD")
    worker.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=list(range(5, 25)),
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    wait_for(lambda: worker.load().num_active == 0)
    events = worker.poll(0.0)

    [delta] = events.tokens
    assert (events.num_steps, len(delta.token_ids), delta.num_decode_steps) == (8, 8, 7)
    assert delta.num_cached_tokens == 0
    # Alone in every step, the request is charged every step's time: once for its prompt, once
    # per decode step.
    assert delta.prefill_compute_ms + delta.decode_compute_ms == pytest.approx(events.step_ms)
    assert delta.prefill_compute_ms > 0 and delta.decode_queue_ms >= 0


def test_a_colocated_request_reports_its_prefix_cache_hits_with_its_first_token(start_worker):
    worker = start_worker("pd-0", "PD")
    prompt = list(range(5, 25))  # its first block of 16 tokens can be cached
    cached = {}
    for request_id in ("r1", "r2"):
        worker.submit_prefill(
            PrefillJob(
                request_id=request_id,
                prompt_token_ids=prompt,
                sampling_params=GREEDY,
                images=[],
                decode_here=True,
            )
        )
        seen = poll_until(worker.poll, is_finished(request_id))
        deltas = [d for events in seen for d in events.tokens if d.request_id == request_id]
        cached[request_id] = [
            (i, d.num_cached_tokens)
            for i, d in enumerate(deltas)
            if d.num_cached_tokens is not None
        ]

    assert cached == {"r1": [(0, 0)], "r2": [(0, 16)]}  # on the first delta only


def test_release_frees_the_producers_copy(start_worker, transport, cat_request):
    encoder = start_worker("e-0", "E")
    encoder.submit_encode(cat_request.encode_job("r1"))
    [encoded] = [d for events in poll_until(encoder.poll, has("encodes")) for d in events.encodes]
    ref = encoded.embeddings[0].ref
    assert transport.held("e-0") == [ref.transfer_id]
    assert not encoder.is_idle()  # a consumer may still need the embeddings

    encoder.release([ref.transfer_id])
    assert transport.held("e-0") == []
    assert encoder.is_idle()
    with pytest.raises(TransferError, match="gone"):
        transport.fetch(ref, encoder.epoch)


def test_a_decoder_keeps_a_private_copy_of_imported_kv_so_the_producer_can_free_it(
    tiny_model_dir, transport
):
    decoder = StageRunner(
        "d-0", 1, Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="D")), transport
    )
    layout, prompt = decoder.fetcher.kv_layout, [5, 6, 7, 8, 9]
    shape = (layout.num_layers, 2, len(prompt), layout.num_kv_heads, layout.head_dim)
    ref = transport.put(np.full(shape, 0.5, np.float32), "p-0", epoch=3)
    decoder.start_decode(
        DecodeJob(
            request_id="r1",
            prompt_token_ids=prompt,
            sampling_params=GREEDY,
            first_token_id=10,
            image_spans=[],
            kv=ref,
            kv_dtype="float32",
            expected_epochs={"p-0": 3},
        )
    )

    kv = decoder.engine.get_request("r1").prompt_kv.kv
    stored = transport.arrays[ref.transfer_id]  # what every fetch maps, read-only
    assert not np.shares_memory(kv, stored)
    assert kv.flags.owndata and kv.flags.writeable
    np.testing.assert_array_equal(kv, stored)
    transport.release(ref.transfer_id)  # on the consumer's TransferConsumed
    while decoder.has_work():
        decoder.turn()
    [delta] = decoder.take_events().tokens.values()
    assert (len(delta.token_ids), delta.finish_reason) == (GREEDY.max_tokens - 1, "length")


def test_local_client_serves_the_worker_interface(tiny_model_dir, transport):
    async def run() -> tuple[list[TokenDelta], int]:
        config = WorkerConfig(
            worker_id="epd-0", engine=EngineConfig(model_dir=str(tiny_model_dir)), pool="colocated"
        )
        client = await LocalWorkerClient.start(config, transport)
        assert (client.worker_id, client.stages, client.pool) == ("epd-0", "EPD", "colocated")
        await client.submit_prefill(
            PrefillJob(
                request_id="r1",
                prompt_token_ids=[5, 6, 7],
                sampling_params=GREEDY,
                images=[],
                decode_here=True,
            )
        )
        deltas = []
        while not any(d.finish_reason for d in deltas):
            deltas += (await client.poll(5.0)).tokens
        load = await client.load()
        await client.stop()
        return deltas, load.num_kv_blocks_used

    deltas, num_used = asyncio.run(asyncio.wait_for(run(), timeout=60))
    assert sum(len(d.token_ids) for d in deltas) == GREEDY.max_tokens
    assert num_used == 0


def test_torch_threads_option_sets_the_process_thread_count(tiny_model_dir, transport):
    before = torch.get_num_threads()
    config = WorkerConfig(
        worker_id="e-0",
        engine=EngineConfig(model_dir=str(tiny_model_dir), stages="E"),
        torch_threads=1,
    )
    worker = WorkerCore(config, transport)
    try:
        assert torch.get_num_threads() == 1
    finally:
        worker.close()
        torch.set_num_threads(before)
