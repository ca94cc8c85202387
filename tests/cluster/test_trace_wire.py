"""A trace reads the same in the scheduler and through GetTrace (its protobuf message)."""

from __future__ import annotations

from cluster.state_messages import trace_events, trace_message
from scheduler.trace_breakdown import trace_breakdown
from tests.scheduler.traces import redriven_image_trace


def test_a_trace_breaks_down_the_same_in_process_and_over_the_wire():
    trace = redriven_image_trace()
    trace.state = "finished"
    message = trace_message(trace)

    assert trace_breakdown(trace_events(message)) == trace_breakdown(trace.events)


def test_the_wire_form_keeps_string_none_and_worker_attributes():
    events = trace_events(trace_message(redriven_image_trace()))
    redrive = next(e for e in events if e.name == "redrive")
    first_token = [e for e in events if e.name == "first_token"][-1]

    assert redrive.attrs == {"stage": "decode", "attempt": 1.0, "reason": "decode worker lost"}
    assert first_token.attrs == {"compute_ms": 25.0, "queue_ms": None, "worker": "p1"}
