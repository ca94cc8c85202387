"""Turns a slow poller missed arrive as one message that adds up to the steps it covers."""

from __future__ import annotations

from workers.contract.messages import TokenDelta, WorkerLoad
from workers.event_buffer import EventBuffer

LOAD = WorkerLoad(
    worker_id="pd-0",
    epoch=1,
    stages="PD",
    is_draining=False,
    num_encode_queued=0,
    num_waiting=0,
    num_running=0,
    num_kv_blocks=32,
    num_kv_blocks_used=0,
    num_kv_blocks_cached=0,
)


def turn(*deltas: TokenDelta, step_ms: float = 2.0) -> EventBuffer:
    buffer = EventBuffer(step_ms=step_ms, num_steps=1)
    for delta in deltas:
        buffer.add_tokens(delta)
    return buffer


def test_three_missed_steps_arrive_as_one_delta_per_request_with_summed_steps():
    first = TokenDelta(
        request_id="a",
        token_ids=[7],
        finish_reason=None,
        num_cached_tokens=16,
        prefill_queue_ms=1.5,
        prefill_compute_ms=2.0,
    )
    published = EventBuffer()
    published.merge(turn(first))
    published.merge(
        turn(
            TokenDelta(
                request_id="a",
                token_ids=[8],
                finish_reason=None,
                num_decode_steps=1,
                decode_compute_ms=2.0,
                decode_queue_ms=0.5,
            )
        )
    )
    published.merge(
        turn(
            TokenDelta(
                request_id="a",
                token_ids=[9],
                finish_reason="length",
                num_decode_steps=1,
                decode_compute_ms=2.0,
            ),
            TokenDelta(request_id="b", token_ids=[3], finish_reason=None),
        )
    )
    message = published.to_message("pd-0", 1, LOAD)

    assert (message.num_steps, message.step_ms) == (3, 6.0)
    assert message.tokens == [
        TokenDelta(
            request_id="a",
            token_ids=[7, 8, 9],
            finish_reason="length",
            num_decode_steps=2,
            decode_compute_ms=4.0,
            decode_queue_ms=0.5,
            num_cached_tokens=16,
            prefill_queue_ms=1.5,
            prefill_compute_ms=2.0,
        ),
        TokenDelta(request_id="b", token_ids=[3], finish_reason=None),
    ]


def test_cache_changes_of_several_missed_turns_arrive_net():
    first, second = EventBuffer(num_steps=1), EventBuffer(num_steps=1)
    first.prefix_blocks.add("aa")
    first.prefix_blocks.add("bb")
    first.prefix_blocks.remove("cc")
    first.embeddings.add("img-1")
    second.prefix_blocks.remove("bb")  # gained and lost since the last poll: in neither list
    second.prefix_blocks.add("cc")  # lost and regained: the poller's copy is right as it is
    second.embeddings.remove("img-0")
    published = EventBuffer()
    published.merge(first)
    published.merge(second)
    message = published.to_message("pd-0", 1, LOAD)

    assert (message.prefix_blocks_added, message.prefix_blocks_removed) == (["aa"], [])
    assert (message.embeddings_added, message.embeddings_removed) == (["img-1"], ["img-0"])
    assert not published.is_empty()  # cache changes alone wake a poller
