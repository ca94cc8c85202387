"""A burst of rocks does not push a text request past its TTFT target under policy "slo", while
first-come-first-served on the same burst does.

Same cluster both times: an encoder, a prefill worker and a decoder (fake workers, whose
profiles say an image costs 100 ms to encode and a prompt token 40 ms to prefill). Four rocks
(8 images each) are encoded, then their prefills reach the prefill worker while it is stalled;
then a text request arrives. The scheduler's clock stands still, so every prediction below is
exact, and the assertions are on what the scheduler recorded (its predictions, the order in
which jobs left its queues, the order the worker received them), never on wall-clock time.

    fcfs: p receives rock0 rock1 rock2 rock3 text   text predicted TTFT = 4 x 440 + 120 ms
    slo:  p receives rock0 text rock1 rock2 rock3   text predicted TTFT =           120 ms

Under "slo" the text's PrefillJob carries an earlier priority than rock0's, so the worker gives
it the step's budget before rock0's remaining chunks (workers/engine/batcher.py): none of the
rocks' work is predicted ahead of it, and it is dispatched although p already holds rock0.
"""

from __future__ import annotations

import asyncio

from scheduler.config import SchedulerConfig
from scheduler.request import RequestSpec
from scheduler.stage import Stage
from tests.scheduler.harness import Cluster, cluster, collect, image, run, wait_until
from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets, WorkerProfile
from workers.contract.sampling_params import SamplingParams

NOW_S = 1_000.0  # the scheduler's clock, and every request's arrival
IMAGE_TOKEN = 99
PROFILE = WorkerProfile(
    encode=LinearCost(0.0, 100.0),  # ms per image token; one token per image here
    prefill=LinearCost(0.0, 40.0),  # ms per prompt token
    decode=DecodeCost(1.0, 0.0, 0.0),
    budgets=StepBudgets(max_num_batched_tokens=512, max_encode_images=8),
    tpot_target_ms=None,
    image_tokens_per_image=1,
    image_token_id=IMAGE_TOKEN,
    block_size=16,
)
ROCK_PREFILL_MS = 11 * 40.0  # 3 text + 8 image tokens
TEXT_PREFILL_MS = 3 * 40.0
NUM_ROCKS = 4


def rock(index: int) -> RequestSpec:
    images = [image(f"rock{index}-{i}") for i in range(8)]
    prompt = [1, 2, 3] + [IMAGE_TOKEN] * 8
    params = SamplingParams(max_tokens=2, seed=0)
    return RequestSpec(f"rock{index}", "tiny", prompt, images, params, arrival_time=NOW_S)


def text() -> RequestSpec:
    params = SamplingParams(max_tokens=2, seed=0)
    return RequestSpec("text", "tiny", [4, 5, 6], [], params, arrival_time=NOW_S)


async def burst_then_text(policy: str) -> tuple[Cluster, list[str]]:
    """Run the burst; return the cluster (still open) and the prefill worker's job order."""
    config = SchedulerConfig(policy=policy)
    profiles = {"e": PROFILE, "p": PROFILE, "d": PROFILE}
    async with cluster(config, lambda: NOW_S, profiles, e="E", p="P", d="D") as c:
        c["p"].is_paused = True
        rocks = [await c.scheduler.generate(rock(i)) for i in range(NUM_ROCKS)]
        # Every rock encoded, and its prefill either at p or waiting in the scheduler's queue.
        await wait_until(
            lambda: (
                len(c["p"].jobs) + c.scheduler.snapshot().num_queued_by_stage["prefill"]
                == NUM_ROCKS
            ),
            "all rock prefills are at p or queued",
        )
        outputs = await c.scheduler.generate(text())
        await asyncio.sleep(0)
        c["p"].resume()
        await asyncio.gather(collect(outputs), *(collect(r) for r in rocks))
        return c, [job.request_id for job in c["p"].jobs]


def predicted_ttft_ms(c: Cluster, request_id: str) -> float:
    return c.scheduler.trace(request_id).event("classified").attrs["predicted_ttft_ms"]


def prefill_order(c: Cluster, request_id: str) -> int:
    dispatched = c.scheduler.trace(request_id).events
    return next(
        e.attrs["order"]
        for e in dispatched
        if e.name == "dispatched" and e.attrs["stage"] == Stage.PREFILL.value
    )


def test_text_request_not_blocked_by_a_burst_of_rocks():
    async def body():
        c, order = await burst_then_text("slo")
        sand_ttft_ms = SchedulerConfig().sand_ttft_ms

        assert order == ["rock0", "text", "rock1", "rock2", "rock3"]
        assert predicted_ttft_ms(c, "text") == TEXT_PREFILL_MS
        prefill_jobs = {job.request_id: job for job in c["p"].jobs}
        assert prefill_jobs["text"].priority < prefill_jobs["rock0"].priority
        assert predicted_ttft_ms(c, "text") <= sand_ttft_ms
        assert all(prefill_order(c, "text") < prefill_order(c, f"rock{i}") for i in (1, 2, 3))
        trace = c.scheduler.trace("text")
        assert trace.event("classified").attrs["request_class"] == "sand"
        # Each first token and each end taught the cost model what its stages missed.
        residuals = c.scheduler.costs.residuals
        assert set(residuals.ttft_ms) == set(residuals.tpot_ms) == {"sand", "rock"}
        assert c.scheduler.trace("rock0").event("classified").attrs["request_class"] == "rock"

    run(body)


def test_first_come_first_served_traps_the_text_request_behind_the_rocks():
    async def body():
        c, order = await burst_then_text("fcfs")
        sand_ttft_ms = SchedulerConfig().sand_ttft_ms

        assert order == ["rock0", "rock1", "rock2", "rock3", "text"]
        assert predicted_ttft_ms(c, "text") == NUM_ROCKS * ROCK_PREFILL_MS + TEXT_PREFILL_MS
        assert predicted_ttft_ms(c, "text") > sand_ttft_ms
        assert {job.priority for job in c["p"].jobs} == {0.0}  # the worker keeps arrival order

    run(body)
