"""The admission gate: what the ingress may refuse at the door, as the scheduler publishes it."""

from __future__ import annotations

import re

import pytest

from scheduler.errors import AdmissionRejectedError
from tests.scheduler.harness import cluster, run, spec


def test_an_idle_cluster_closes_nothing():
    async def body():
        async with cluster(epd="EPD") as c:
            c.scheduler.costs.residuals.observe_ttft("sand", predicted_ms=50.0, measured_ms=5e3)
            gate = c.scheduler.admission_gate()
            assert gate.models["tiny"].least_ttft_ms == {}
            assert gate.refusal("tiny", "sand", None, None) is None

    run(body)


def test_a_busy_cluster_publishes_what_it_would_refuse_and_counts_door_refusals():
    async def body():
        async with cluster(epd="EPD") as c:
            c.scheduler.costs.residuals.observe_ttft("sand", predicted_ms=50.0, measured_ms=5e3)
            c["epd"].is_paused = True
            await c.scheduler.generate(spec("busy"))
            with pytest.raises(AdmissionRejectedError) as refused:
                await c.scheduler.generate(spec("r1"))

            gate = c.scheduler.admission_gate()
            least = gate.models["tiny"].least_ttft_ms["sand"]
            # Past the target, and no later than r1 (three prompt tokens), which was refused.
            r1_ms = float(re.search(r"predicted TTFT (\d+) ms", str(refused.value)).group(1))
            assert 1_000.0 < least <= r1_ms + 1.0
            assert gate.refusal("tiny", "sand", None, None) == (least, 1_000.0)
            assert gate.refusal("tiny", "sand", None, "best_effort") is None  # admitted anyway
            assert gate.refusal("tiny", "sand", least + 1.0, None) is None  # its own target
            assert gate.refusal("other", "sand", None, None) is None

            rejected = c.scheduler.ledger.classes["sand"].num_rejected
            c.scheduler.refused_at_door("sand", 3)
            assert c.scheduler.ledger.classes["sand"].num_rejected == rejected + 3

    run(body)
