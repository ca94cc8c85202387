"""The scheduler's one switch between SLO-aware scheduling and the FCFS baseline.

`SchedulerConfig.policy` names it; `SchedulerConfig.mode` turns the name into this object once,
and every part that behaves differently asks it (`mode.is_slo_aware`), never the string.

    SLO   encode and prefill jobs wait in the scheduler's stage queues, ordered by slack with
          aging (stage_queue.py), and leave for a worker only while its backlog is under the
          dispatch horizon (dispatcher.py); a prefill carries its latest start as its priority
          inside the worker; admission forecasts TTFT against the target (admission.py);
          placement picks the earliest predicted completion, with prefix and embedding
          affinity, and skips encode when a prefill worker already holds every image's
          embeddings (placement.py); workers derive step budgets from the strictest TPOT.
    FCFS  the baseline: every stage is placed the moment it is ready, on the least-loaded
          worker; workers run jobs in arrival order; every prefill has priority 0.
"""

from __future__ import annotations

from enum import StrEnum


class SchedulingMode(StrEnum):
    SLO = "slo"
    FCFS = "fcfs"

    @property
    def is_slo_aware(self) -> bool:
        return self is SchedulingMode.SLO

    def prefill_priority(self, latest_start_ms: float) -> float:
        """A PrefillJob's priority inside its worker (lower goes first): the latest start
        under SLO, 0 for everyone under FCFS (arrival order)."""
        return latest_start_ms if self.is_slo_aware else 0.0
