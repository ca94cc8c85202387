"""A request's trace: every state change and stage event, in ms since the request arrived."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler.trace_events import EventName


@dataclass(frozen=True)
class TraceEvent:
    name: str  # an EventName (trace_events.py lists them and their attributes)
    time_ms: float  # since the request arrived
    attrs: dict[str, Any] = field(default_factory=dict)  # worker, bytes, ms, count, reason, ...


class Trace:
    """Append-only event log of one request. Decode steps are counted, not logged one by one:
    the lifecycle writes one `decode_steps` event with the count and times when the request
    ends. They add up over re-drives: every attempt's decode steps cost engine time."""

    def __init__(
        self, request_id: str, arrival_time: float, clock: Callable[[], float], model: str = ""
    ) -> None:
        self.request_id = request_id
        self.model = model
        self.state = "queued"  # kept equal to the request's lifecycle state
        self.arrival_time = arrival_time
        self.events: list[TraceEvent] = []
        self.num_decode_steps = 0  # engine steps that produced its decode tokens
        self.decode_compute_ms = 0.0  # their summed time (the whole step each)
        self.decode_queue_ms = 0.0  # waiting for the first decode step, each attempt
        self._clock = clock

    def record(self, name: EventName, **attrs: Any) -> TraceEvent:
        time_ms = (self._clock() - self.arrival_time) * 1000.0
        event = TraceEvent(name=name, time_ms=time_ms, attrs=attrs)
        self.events.append(event)
        return event

    def add_decode_steps(self, num_steps: int, compute_ms: float, queue_ms: float | None) -> None:
        self.num_decode_steps += num_steps
        self.decode_compute_ms += compute_ms
        self.decode_queue_ms += queue_ms or 0.0

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def event(self, name: EventName) -> TraceEvent | None:
        """The first event with this name."""
        return next((event for event in self.events if event.name == name), None)


class TraceStore:
    """The traces of the last `capacity` requests that ended, least recently read evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._traces: OrderedDict[str, Trace] = OrderedDict()

    def put(self, trace: Trace) -> None:
        self._traces[trace.request_id] = trace
        self._traces.move_to_end(trace.request_id)
        while len(self._traces) > self.capacity:
            self._traces.popitem(last=False)

    def get(self, request_id: str) -> Trace | None:
        trace = self._traces.get(request_id)
        if trace is not None:
            self._traces.move_to_end(request_id)
        return trace

    def __len__(self) -> int:
        return len(self._traces)
