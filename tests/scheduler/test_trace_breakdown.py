"""The one parser of traces: what a request's events say about where its time went."""

from __future__ import annotations

import pytest

from scheduler.trace import Trace
from scheduler.trace_breakdown import trace_breakdown
from scheduler.trace_events import EventName
from tests.scheduler.traces import Clock, redriven_image_trace


def test_a_redriven_request_adds_up_its_attempts():
    split = trace_breakdown(redriven_image_trace().events)

    assert split.scheduler_queue_ms == {"encode": 1.5, "prefill": 2.5}
    assert split.queue_ms == {"encode": 2.0, "prefill": 4.0, "decode": 1.0}
    assert split.compute_ms == {"encode": 10.0, "prefill": 45.0, "decode": 70.0}
    assert split.transfer_ms == {"embedding": 3.0, "kv": 6.0}
    assert split.transfer_bytes == {"embedding": 1000, "kv": 4096}
    assert (split.num_decode_steps, split.num_redrives) == (7, 1)
    assert (split.request_class, split.admission, split.predicted_ttft_ms) == (
        "pebble",
        "admit",
        90.0,
    )


def test_milestones_are_the_first_of_each_and_the_end_is_the_last_event():
    split = trace_breakdown(redriven_image_trace().events)

    assert split.scheduler_arrival_ms == 0.0
    assert split.first_dispatch_ms == pytest.approx(2.0)
    assert split.server_ttft_ms == pytest.approx(32.0)
    assert split.server_e2e_ms == pytest.approx(132.0)


def test_a_missing_attribute_counts_as_zero_and_is_named():
    split = trace_breakdown(redriven_image_trace().events)

    assert split.missing == ("first_token.queue_ms",)


def test_a_text_request_that_never_decoded_misses_decode_but_not_encode():
    trace = Trace("t", 0.0, Clock())
    trace.record(EventName.FIRST_TOKEN, compute_ms=5.0, queue_ms=1.0)
    split = trace_breakdown(trace.events)

    assert split.missing == ("decode_steps",)
    assert "encode" not in split.compute_ms and split.first_dispatch_ms is None


def test_an_attribute_that_is_not_a_number_raises():
    trace = Trace("t", 0.0, Clock())
    trace.record(EventName.ENCODE_DONE, compute_ms="not a number")

    with pytest.raises(ValueError, match="compute_ms='not a number' is not a number"):
        trace_breakdown(trace.events)


def test_event_names_equal_the_strings_old_traces_carry():
    assert EventName.transfer("kv") == "kv_transfer" == EventName.KV_TRANSFER
    assert EventName.transfer("embedding") == "embedding_transfer"
    assert f"{EventName.FIRST_TOKEN}" == "first_token"
    assert trace_breakdown([]).server_e2e_ms == 0.0
