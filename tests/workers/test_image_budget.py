"""The encode side of a turn takes at most `max_encode_images` images: a big job is split across
turns (decode steps run in between) and still reported once, as if encoded in one go."""

from __future__ import annotations

import numpy as np
import pytest

from tests.workers.support import distinct_images
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import EncodeJob
from workers.engine.engine import Engine
from workers.event_buffer import EventBuffer
from workers.stage_runner import StageRunner

EPOCH = 1


@pytest.fixture
def make_encoder(tiny_model_dir, transport):
    def make(**options) -> StageRunner:
        engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="E"))
        return StageRunner("e-0", EPOCH, engine, transport, **options)

    return make


def turns_until_idle(runner: StageRunner) -> list[tuple[EventBuffer, int]]:
    """Each turn's events, with the images still queued after it."""
    turns = []
    while runner.has_work():
        runner.turn()
        turns.append((runner.take_events(), runner.measure_load().num_encode_queued))
    return turns


def test_five_images_under_a_budget_of_two_take_three_turns_and_one_encode_done(
    make_encoder, transport
):
    job = EncodeJob(request_id="r1", images=distinct_images(5))
    hashes = [image.image_hash for image in job.images]
    split = make_encoder(max_encode_images=2)
    split.queue_encode(job)
    turns = turns_until_idle(split)

    assert [queued for _, queued in turns] == [3, 1, 0]
    assert [list(events.embeddings.added) for events, _ in turns] == [
        hashes[0:2], hashes[2:4], hashes[4:5]
    ]  # fmt: skip
    assert [len(events.encodes) for events, _ in turns] == [0, 0, 1]
    [done] = turns[-1][0].encodes
    assert [item.image_hash for item in done.embeddings] == hashes

    whole = make_encoder()
    whole.queue_encode(job)
    [(events, _)] = turns_until_idle(whole)
    [done_at_once] = events.encodes
    for piece, at_once in zip(done.embeddings, done_at_once.embeddings, strict=True):
        assert np.array_equal(
            transport.fetch(piece.ref, EPOCH), transport.fetch(at_once.ref, EPOCH)
        )


def test_small_jobs_share_a_turn_up_to_the_budget(make_encoder):
    encoder = make_encoder(max_encode_images=3)
    for request_id, images in [("a", distinct_images(2)), ("b", distinct_images(2, 200))]:
        encoder.queue_encode(EncodeJob(request_id=request_id, images=images))
    turns = turns_until_idle(encoder)

    # a's 2 images and b's first in turn 1; b's second in turn 2.
    assert [[d.request_id for d in events.encodes] for events, _ in turns] == [["a"], ["b"]]


def test_an_aborted_job_is_dropped_with_the_images_it_had_left(make_encoder):
    encoder = make_encoder(max_encode_images=2)
    encoder.queue_encode(EncodeJob(request_id="big", images=distinct_images(5)))
    encoder.queue_encode(EncodeJob(request_id="next", images=distinct_images(1, 200)))
    encoder.turn()  # 2 of big's 5 images
    encoder.abort("big")

    assert encoder.measure_load().num_encode_queued == 1
    events = EventBuffer()
    events.merge(encoder.take_events())
    for turn_events, _ in turns_until_idle(encoder):
        events.merge(turn_events)
    assert ([d.request_id for d in events.encodes], events.failures) == (["next"], [])


def test_a_budget_below_one_image_is_refused(tiny_model_dir, transport):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="E"))
    with pytest.raises(ValueError, match="max_encode_images must be >= 1"):
        StageRunner("e-0", EPOCH, engine, transport, max_encode_images=0)
