"""Each job's queue and compute times, on a clock that moves only when the test says so.

Every engine step and every encode takes STEP_MS; a fetch takes FETCH_MS. Powers of two keep
the sums exact in binary floating point.
"""

from __future__ import annotations

import pytest

from tests.workers.support import GREEDY, distinct_images
from workers.contract.engine_config import EngineConfig
from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob
from workers.engine.engine import Engine
from workers.event_buffer import EventBuffer
from workers.stage_runner import StageRunner

STEP_MS = 15.625
FETCH_MS = 7.8125


class Clock:
    def __init__(self) -> None:
        self.now = 0.0  # seconds

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1e3


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_runner(tiny_model_dir, transport, clock, monkeypatch):
    """make_runner(worker_id, stages, max_encode_images=..., **engine_options) -> a StageRunner
    on the test's clock."""

    def make(
        worker_id: str, stages: str, max_encode_images: int = 64, **engine_options
    ) -> StageRunner:
        config = EngineConfig(
            model_dir=str(tiny_model_dir), stages=stages, num_kv_blocks=32, **engine_options
        )
        engine = Engine(config)
        for name in ("step", "encode"):
            monkeypatch.setattr(engine, name, _taking(STEP_MS, getattr(engine, name), clock))
        return StageRunner(worker_id, 1, engine, transport, clock, max_encode_images)

    monkeypatch.setattr(transport, "fetch", _taking(FETCH_MS, transport.fetch, clock))
    return make


def _taking(ms: float, call, clock: Clock):
    def timed(*args, **kwargs):
        clock.advance_ms(ms)
        return call(*args, **kwargs)

    return timed


def run_until_idle(runner: StageRunner) -> EventBuffer:
    events = EventBuffer()
    while runner.has_work():
        runner.turn()
        events.merge(runner.take_events())
    return events


def test_prefill_is_charged_every_chunk_and_waiting_behind_another_prompt_is_queue(
    make_runner,
):
    runner = make_runner("pd-0", "PD", max_num_batched_tokens=8)
    long, short = list(range(5, 25)), list(range(40, 50))
    runner.start_prefill(
        PrefillJob(
            request_id="long",
            prompt_token_ids=long,
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    runner.start_prefill(
        PrefillJob(
            request_id="short",
            prompt_token_ids=short,
            sampling_params=GREEDY,
            images=[],
            decode_here=True,
        )
    )
    events = run_until_idle(runner)

    # 8 tokens a step:   step 1  step 2  step 3          step 4            steps 5..11
    #   long (20)         8       8       4 -> token 1    decode            decode until 10
    #   short (10)        -       -       4               6 -> token 1      decode
    timing = {
        d.request_id: (
            d.prefill_queue_ms, d.prefill_compute_ms, d.decode_queue_ms, d.num_decode_steps,
            d.decode_compute_ms,
        )
        for d in events.tokens.values()
    }  # fmt: skip
    assert timing == {
        "long": (0.0, 3 * STEP_MS, 0.0, 7, 7 * STEP_MS),
        "short": (2 * STEP_MS, 2 * STEP_MS, 0.0, 7, 7 * STEP_MS),
    }
    assert (events.num_steps, events.step_ms) == (11, 11 * STEP_MS)


def test_encode_queue_runs_from_arrival_to_the_start_of_its_encode(make_runner, clock, cat_request):
    encoder = make_runner("e-0", "E")
    encoder.queue_encode(cat_request.encode_job("r1"), arrival=clock())
    clock.advance_ms(31.25)  # e.g. a step of another job on the engine thread
    [done] = run_until_idle(encoder).encodes

    assert (done.queue_ms, done.compute_ms) == (31.25, STEP_MS)


def test_a_job_split_by_the_image_budget_is_charged_every_piece_and_queued_until_the_first(
    make_runner, clock
):
    encoder = make_runner("e-0", "E", max_encode_images=2)
    encoder.queue_encode(EncodeJob(request_id="r1", images=distinct_images(5)), arrival=clock())
    clock.advance_ms(31.25)
    [done] = run_until_idle(encoder).encodes

    assert (done.queue_ms, done.compute_ms) == (31.25, 3 * STEP_MS)  # 2 + 2 + 1 images


def test_handed_off_request_reports_prefill_and_decode_times_without_the_fetches(
    make_runner, clock, cat_request
):
    encoder, prefiller, decoder = (
        make_runner("e-0", "E"), make_runner("p-0", "P"), make_runner("d-0", "D")
    )  # fmt: skip
    encoder.queue_encode(cat_request.encode_job("r1"))
    [encoded] = run_until_idle(encoder).encodes
    prefiller.start_prefill(
        PrefillJob(
            request_id="r1",
            prompt_token_ids=cat_request.prompt_token_ids,
            sampling_params=GREEDY,
            images=encoded.embeddings,
            decode_here=False,
            expected_epochs={"e-0": 1},
        ),
        arrival=clock(),
    )
    clock.advance_ms(31.25)
    prefilled = run_until_idle(prefiller)
    [done] = prefilled.prefills
    arrival = clock()
    decoder.start_decode(
        DecodeJob(
            request_id="r1",
            prompt_token_ids=cat_request.prompt_token_ids,
            sampling_params=GREEDY,
            first_token_id=done.first_token_id,
            image_spans=done.image_spans,
            kv=done.kv,
            kv_dtype=done.kv_dtype,
            expected_epochs={"p-0": 1},
        ),
        arrival=arrival,
    )
    clock.advance_ms(62.5)
    decoded = run_until_idle(decoder)

    assert [c.fetch_ms for c in prefilled.consumed + decoded.consumed] == [FETCH_MS, FETCH_MS]
    assert (done.queue_ms, done.compute_ms) == (31.25, STEP_MS)
    [delta] = decoded.tokens.values()
    assert (delta.decode_queue_ms, delta.num_decode_steps, delta.decode_compute_ms) == (
        62.5, GREEDY.max_tokens - 1, (GREEDY.max_tokens - 1) * STEP_MS,
    )  # fmt: skip
    assert (delta.num_cached_tokens, delta.prefill_compute_ms) == (None, 0.0)
