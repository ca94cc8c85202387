"""The request state machine, its trace, and where a re-drive restarts."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.errors import IllegalTransitionError
from scheduler.lifecycle import Lifecycle, RequestState, redrive_refusal, restart_stage
from scheduler.stage import Stage
from scheduler.trace import Trace, TraceStore

S = RequestState


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lifecycle(clock: FakeClock | None = None) -> Lifecycle:
    clock = clock or FakeClock()
    return Lifecycle(Trace("r1", arrival_time=clock.now, clock=clock))


def test_image_request_goes_through_every_stage_and_each_is_timestamped():
    clock = FakeClock()
    life = lifecycle(clock)
    for state, now in [(S.ENCODING, 100.5), (S.PREFILLING, 101.0), (S.DECODING, 101.25)]:
        clock.now = now
        life.advance(state, worker="w")
    life.trace.add_decode_steps(1, compute_ms=2.0, queue_ms=0.5)  # the first decode step
    life.trace.add_decode_steps(2, compute_ms=4.0, queue_ms=None)  # two more, in one message
    clock.now = 102.0
    life.advance(S.FINISHED, finish_reason="length")

    assert life.state is S.FINISHED
    assert [(e.name, e.time_ms) for e in life.trace.events] == [
        ("queued", 0.0),
        ("encode_start", 500.0),
        ("prefill_start", 1000.0),
        ("decode_start", 1250.0),
        ("decode_steps", 2000.0),
        ("finished", 2000.0),
    ]
    assert life.trace.event("decode_steps").attrs == {
        "count": 3, "compute_ms": 6.0, "queue_ms": 0.5,
    }  # fmt: skip
    assert life.trace.event("finished").attrs == {"finish_reason": "length"}


def test_text_request_skips_encoding():
    life = lifecycle()
    life.advance(S.PREFILLING)
    life.advance(S.DECODING)
    life.advance(S.FINISHED)

    assert life.trace.names == ["queued", "prefill_start", "decode_start", "finished"]


def test_request_can_finish_at_its_first_token():
    life = lifecycle()
    life.advance(S.PREFILLING)
    life.advance(S.FINISHED)

    assert life.state is S.FINISHED


@pytest.mark.parametrize(
    "path", [[S.ENCODING], [S.PREFILLING], [S.ENCODING, S.PREFILLING, S.DECODING]]
)
@pytest.mark.parametrize("end", [S.QUEUED, S.CANCELLED, S.FAILED])
def test_active_request_can_be_requeued_cancelled_or_failed(path, end):
    life = lifecycle()
    for state in path:
        life.advance(state)
    life.advance(end)

    assert life.state is end


@pytest.mark.parametrize(
    "path",
    [
        [S.DECODING],  # queued -> decoding: never prefilled
        [S.FINISHED],  # queued -> finished
        [S.ENCODING, S.DECODING],  # encoding -> decoding: skips prefill
        [S.PREFILLING, S.DECODING, S.PREFILLING],  # back without a re-drive
        [S.PREFILLING, S.FINISHED, S.QUEUED],  # finished is final
        [S.CANCELLED, S.FAILED],  # cancelled is final
        [S.FAILED, S.CANCELLED],  # failed is final
    ],
)
def test_illegal_transition_raises_and_leaves_the_state_as_it_was(path):
    life = lifecycle()
    *legal, illegal = path
    for state in legal:
        life.advance(state)
    before = life.state

    with pytest.raises(IllegalTransitionError, match=f"from {before.value} to {illegal.value}"):
        life.advance(illegal)
    assert life.state is before
    assert len(life.trace.events) == len(legal) + 1


def test_lifecycle_stage_names_the_stage_running_now():
    life = lifecycle()
    stages = [life.stage]
    for state in (S.ENCODING, S.PREFILLING, S.DECODING, S.FINISHED):
        life.advance(state)
        stages.append(life.stage)

    assert stages == [None, Stage.ENCODE, Stage.PREFILL, Stage.DECODE, None]


@pytest.mark.parametrize(
    ("failed", "has_images", "embeddings_reusable", "restart"),
    [
        (Stage.ENCODE, True, False, Stage.ENCODE),
        (Stage.ENCODE, True, True, Stage.ENCODE),
        (Stage.PREFILL, True, True, Stage.PREFILL),  # e.g. the prefill worker died
        (Stage.PREFILL, True, False, Stage.ENCODE),  # e.g. a corrupt embedding transfer
        (Stage.PREFILL, False, False, Stage.PREFILL),
        (Stage.DECODE, False, False, Stage.PREFILL),  # e.g. a failed KV import
        (Stage.DECODE, True, True, Stage.PREFILL),
        (Stage.DECODE, True, False, Stage.ENCODE),
    ],
)
def test_redrive_restarts_from_the_last_good_stage(
    failed, has_images, embeddings_reusable, restart
):
    assert restart_stage(failed, has_images, embeddings_reusable) is restart


@pytest.mark.parametrize(
    ("retriable", "num_redrives", "refusal"),
    [
        (True, 0, None),
        (True, 1, None),
        (False, 0, "decode failed: bad KV"),
        (True, 2, "decode failed after 2 re-drives: bad KV"),
    ],
)
def test_redrive_is_refused_only_when_not_retriable_or_out_of_retries(
    retriable, num_redrives, refusal
):
    config = SchedulerConfig(max_retries=2)
    assert redrive_refusal(Stage.DECODE, "bad KV", retriable, num_redrives, config) == refusal


def test_trace_store_keeps_the_most_recently_used_traces():
    clock = FakeClock()
    store = TraceStore(capacity=2)
    for request_id in ("a", "b"):
        store.put(Trace(request_id, clock.now, clock))
    assert store.get("a") is not None  # "a" is now the most recently used
    store.put(Trace("c", clock.now, clock))

    assert (store.get("a") is not None, store.get("b"), store.get("c") is not None) == (
        True,
        None,
        True,
    )
    assert len(store) == 2
