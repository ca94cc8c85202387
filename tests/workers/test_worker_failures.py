"""Bad, stale or unwanted work fails its own request only, clearly, and leaves no blocks behind."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.workers.support import (
    GREEDY,
    finish_reason,
    has,
    is_finished,
    poll_until,
    token_ids,
)
from workers.contract.messages import (
    DecodeJob,
    EmbeddingInput,
    EncodeJob,
    ImageInput,
    PrefillJob,
    TransferRef,
    WorkerEvents,
)
from workers.contract.sampling_params import SamplingParams

LONG = SamplingParams(max_tokens=200, ignore_eos=True, seed=0)
TRACEBACK = 'Traceback (most recent call last):\n  File "/srv/triserve/x.py", line 1\nKeyError: 3'


def failures(seen: list[WorkerEvents]) -> list[tuple[str, str, bool]]:
    return [(f.request_id, f.stage, f.retriable) for e in seen for f in e.failures]


def invalid_inputs(seen: list[WorkerEvents]) -> list[str]:
    """The requests that failed because of their input."""
    return [f.request_id for e in seen for f in e.failures if f.is_invalid_input]


def reasons(seen: list[WorkerEvents]) -> list[str]:
    return [f.reason for e in seen for f in e.failures]


def nothing_imported(worker) -> bool:
    load = worker.load()
    return (load.num_waiting, load.num_running, load.num_kv_blocks_used) == (0, 0, 0)


def encode(encoder, request, request_id="r1"):
    encoder.submit_encode(request.encode_job(request_id))
    [done] = [d for events in poll_until(encoder.poll, has("encodes")) for d in events.encodes]
    return done


def prefill(prefiller, encoder, request, encoded, request_id="r1"):
    prefiller.submit_prefill(
        PrefillJob(
            request_id=request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling_params=GREEDY,
            images=encoded.embeddings,
            decode_here=False,
            expected_epochs={encoder.worker_id: encoder.epoch},
        )
    )
    [done] = [d for events in poll_until(prefiller.poll, has("prefills")) for d in events.prefills]
    return done


def decode_job(request, done, expected_epochs, request_id="r1") -> DecodeJob:
    return DecodeJob(
        request_id=request_id,
        prompt_token_ids=request.prompt_token_ids,
        sampling_params=GREEDY,
        first_token_id=done.first_token_id,
        image_spans=done.image_spans,
        kv=done.kv,
        kv_dtype=done.kv_dtype,
        expected_epochs=expected_epochs,
    )


def test_corrupt_embeddings_are_rejected_retriably_and_nothing_is_imported(
    start_worker, transport, cat_request
):
    encoder, prefiller = start_worker("e-0", "E"), start_worker("p-0", "P")
    encoded = encode(encoder, cat_request)
    stored = transport.arrays[encoded.embeddings[0].ref.transfer_id]
    stored.reshape(-1).view(np.uint8)[100] ^= 0x10  # one bit, somewhere in the object store
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
    seen = poll_until(prefiller.poll, has("failures"))
    assert failures(seen) == [("r1", "prefill", True)]
    assert "corrupt" in reasons(seen)[0]
    assert [c for e in seen for c in e.consumed] == []
    assert nothing_imported(prefiller)


def test_kv_from_a_restarted_prefill_worker_is_rejected_as_stale(start_worker, cat_request):
    encoder, prefiller, decoder = (
        start_worker("e-0", "E"), start_worker("p-0", "P"), start_worker("d-0", "D")
    )  # fmt: skip
    done = prefill(prefiller, encoder, cat_request, encode(encoder, cat_request))
    decoder.submit_decode(decode_job(cat_request, done, {"p-0": prefiller.epoch + 1}))
    seen = poll_until(decoder.poll, has("failures"))
    assert failures(seen) == [("r1", "decode", True)]
    assert "stale" in reasons(seen)[0]
    assert [c for e in seen for c in e.consumed] == [] and token_ids(seen, "r1") == []
    assert nothing_imported(decoder)


def test_a_job_without_the_producers_expected_epoch_is_refused(start_worker, cat_request):
    encoder, prefiller, decoder = (
        start_worker("e-0", "E"), start_worker("p-0", "P"), start_worker("d-0", "D")
    )  # fmt: skip
    done = prefill(prefiller, encoder, cat_request, encode(encoder, cat_request))
    decoder.submit_decode(decode_job(cat_request, done, expected_epochs={}))
    seen = poll_until(decoder.poll, has("failures"))
    assert failures(seen) == [("r1", "decode", False)]
    assert reasons(seen) == ["the job gives no expected epoch for p-0"]
    assert invalid_inputs(seen) == []  # the scheduler's mistake, not the client's


def test_kv_of_the_wrong_shape_fails_its_request_and_not_the_running_batch(
    start_worker, transport, cat_request
):
    decoder = start_worker("d-0", "PD")
    decoder.submit_prefill(
        PrefillJob(
            request_id="running",
            prompt_token_ids=list(range(5, 25)),
            sampling_params=LONG,
            images=[],
            decode_here=True,
        )
    )
    poll_until(decoder.poll, lambda seen: token_ids(seen, "running") != [])
    wrong = transport.put(np.zeros((2, 2, 3, 2, 16), np.float32), "p-0", epoch=1)
    decoder.submit_decode(
        DecodeJob(
            request_id="bad",
            prompt_token_ids=[5, 6, 7, 8],
            sampling_params=GREEDY,
            first_token_id=9,
            image_spans=[],
            kv=wrong,
            kv_dtype="float32",
            expected_epochs={"p-0": 1},
        )
    )
    seen = poll_until(decoder.poll, lambda s: has("failures")(s) and is_finished("running")(s))
    assert failures(seen) == [("bad", "decode", False)]
    assert "does not fit" in reasons(seen)[0]
    assert invalid_inputs(seen) == []
    assert finish_reason(seen, "running") == "length"


def test_abort_frees_every_kv_block(start_worker, cat_request):
    encoder, prefiller, decoder = (
        start_worker("e-0", "E"), start_worker("p-0", "P"), start_worker("d-0", "D")
    )  # fmt: skip
    done = prefill(prefiller, encoder, cat_request, encode(encoder, cat_request))
    job = decode_job(cat_request, done, {"p-0": prefiller.epoch})
    decoder.submit_decode(replace(job, sampling_params=LONG))
    poll_until(decoder.poll, lambda seen: token_ids(seen, "r1") != [])
    assert decoder.load().num_kv_blocks_used > 0

    decoder.abort("r1")
    seen = poll_until(decoder.poll, is_finished("r1"))
    assert finish_reason(seen, "r1") == "abort"
    assert len(token_ids(seen, "r1")) < LONG.max_tokens
    load = decoder.load()
    assert (load.num_running, load.num_waiting, load.num_kv_blocks_used) == (0, 0, 0)


def test_draining_worker_refuses_new_jobs_retriably_and_finishes_running_ones(start_worker):
    worker = start_worker("epd-0", "EPD")
    worker.submit_prefill(
        PrefillJob(
            request_id="old",
            prompt_token_ids=list(range(5, 25)),
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    worker.drain()
    worker.submit_prefill(
        PrefillJob(
            request_id="new",
            prompt_token_ids=list(range(5, 25)),
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    seen = poll_until(worker.poll, is_finished("old"))
    assert failures(seen) == [("new", "prefill", True)]
    assert reasons(seen) == ["epd-0 is draining"]
    assert len(token_ids(seen, "old")) == GREEDY.max_tokens
    assert seen[-1].load.is_draining
    assert worker.is_idle()


def test_workers_refuse_stages_they_do_not_run(start_worker):
    encoder, prefiller, decoder = (
        start_worker("e-0", "E"), start_worker("p-0", "P"), start_worker("d-0", "D")
    )  # fmt: skip
    kv = TransferRef(
        transfer_id="p-0/x", handle=None, nbytes=0, checksum=0, producer_id="p-0", producer_epoch=1
    )
    text_prefill = PrefillJob(
        request_id="r",
        prompt_token_ids=[5, 6, 7],
        sampling_params=GREEDY,
        images=[],
        decode_here=False,
    )
    encoder.submit_prefill(text_prefill)
    encoder.submit_decode(
        DecodeJob(
            request_id="r",
            prompt_token_ids=[5, 6, 7],
            sampling_params=GREEDY,
            first_token_id=8,
            image_spans=[],
            kv=kv,
            kv_dtype="float32",
        )
    )
    prefiller.submit_prefill(
        PrefillJob(
            request_id="r",
            prompt_token_ids=[5, 6, 7],
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    prefiller.submit_encode(EncodeJob(request_id="r", images=[]))
    decoder.submit_encode(EncodeJob(request_id="r", images=[]))
    decoder.submit_prefill(text_prefill)
    assert failures([encoder.poll(0.0)]) == [("r", "prefill", False), ("r", "decode", False)]
    assert failures([prefiller.poll(0.0)]) == [("r", "prefill", False), ("r", "encode", False)]
    assert failures([decoder.poll(0.0)]) == [("r", "encode", False), ("r", "prefill", False)]
    assert reasons([decoder.poll(0.0)]) == []


def test_an_undecodable_image_fails_its_request_only(start_worker, cat_request):
    encoder = start_worker("e-0", "E")
    encoder.submit_encode(
        EncodeJob(request_id="bad", images=[ImageInput(image_hash="0" * 32, data=b"not an image")])
    )
    encoder.submit_encode(cat_request.encode_job("good"))
    seen = poll_until(encoder.poll, lambda s: has("failures")(s) and has("encodes")(s))
    assert failures(seen) == [("bad", "encode", False)]
    assert invalid_inputs(seen) == ["bad"]
    assert "cannot decode image" in reasons(seen)[0]
    assert [d.request_id for e in seen for d in e.encodes] == ["good"]


def test_an_image_hash_that_is_not_the_pixels_hash_is_refused(start_worker, cat_request):
    encoder = start_worker("e-0", "E")
    wrong = ImageInput(image_hash="f" * 32, data=cat_request.image.data)
    encoder.submit_encode(EncodeJob(request_id="r1", images=[wrong]))
    seen = poll_until(encoder.poll, has("failures"))
    assert failures(seen) == [("r1", "encode", False)]
    assert invalid_inputs(seen) == ["r1"]
    assert encoder.transport.held("e-0") == []


def test_a_prompt_too_long_for_the_workers_kv_cache_fails_as_invalid_input(start_worker):
    worker = start_worker("pd-0", "PD")  # 32 blocks of 16 tokens
    too_long = SamplingParams(max_tokens=1000, ignore_eos=True, seed=0)
    worker.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=[5, 6, 7],
            sampling_params=too_long,
            images=[],
            decode_here=True,
        )
    )
    seen = poll_until(worker.poll, has("failures"))
    assert failures(seen) == [("r1", "prefill", False)]
    assert invalid_inputs(seen) == ["r1"]
    assert nothing_imported(worker)


def test_embeddings_missing_from_the_workers_cache_fail_retriably(start_worker, cat_request):
    prefiller = start_worker("p-0", "PD")
    cached = [EmbeddingInput(image_hash=cat_request.image.image_hash, ref=None)]
    prefiller.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=cat_request.prompt_token_ids,
            sampling_params=GREEDY,
            images=cached,
            decode_here=True,
        )
    )
    seen = poll_until(prefiller.poll, has("failures"))
    assert failures(seen) == [("r1", "prefill", True)]
    assert reasons(seen) == [f"image {cat_request.image.image_hash} is not cached here"]


def test_a_worker_whose_engine_thread_died_says_so_on_poll(start_worker, monkeypatch):
    worker = start_worker("epd-0", "EPD")
    monkeypatch.setattr(worker.engine, "stats", lambda: 1 / 0)  # a bug outside any one job
    worker.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=[5, 6, 7],
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    with pytest.raises(RuntimeError, match="epd-0 stopped: ZeroDivisionError"):
        poll_until(worker.poll, lambda seen: False)


def _raise_traceback(*args, **kwargs):
    raise RuntimeError(TRACEBACK)


def test_an_internal_error_is_reported_as_a_class_and_logged_in_full(
    start_worker, monkeypatch, caplog
):
    worker = start_worker("pd-0", "PD")
    monkeypatch.setattr(worker.engine, "add_request", _raise_traceback)
    worker.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=[5, 6, 7],
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    seen = poll_until(worker.poll, has("failures"))
    assert failures(seen) == [("r1", "prefill", False)]
    assert reasons(seen) == ["internal error"]
    assert TRACEBACK in caplog.text


def test_a_failed_engine_step_fails_its_batch_retriably_without_the_exceptions_text(
    start_worker, monkeypatch, caplog
):
    worker = start_worker("pd-0", "PD")
    monkeypatch.setattr(worker.engine, "step", _raise_traceback)
    worker.submit_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=[5, 6, 7],
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    seen = poll_until(worker.poll, has("failures"))
    assert failures(seen) == [("r1", "prefill", True)]
    assert reasons(seen) == ["engine step failed"]
    assert TRACEBACK in caplog.text
