"""Start-up profiling: a worker measures its own engine, derives its step budgets, and then
serves exactly as an engine that was never profiled."""

from __future__ import annotations

import fcntl

import pytest

from tests.workers.support import GREEDY, colocated_tokens
from workers.contract.cost_profile import DecodeCost, LinearCost, StepBudgets
from workers.contract.engine_config import EngineConfig
from workers.contract.worker_config import WorkerConfig
from workers.engine.engine import Engine
from workers.engine_messages import EngineStats
from workers.profiler import PROFILING_LOCK, _one_profile_at_a_time, profile_worker
from workers.worker import WorkerCore

# The costs the fake engine below takes (ms), and the time they leave in a TPOT of 100.1 ms:
# decode of 8 x 256 tokens 3 + 0.5 * 8 + 2048 / 128 = 23 ms, so 77.1 ms are left:
# (77.1 - 1) / 0.25 = 304.4 prompt tokens and (77.1 - 2) / 0.125 / 16 = 37.55 images.
ENCODE = LinearCost(base_ms=2.0, per_unit_ms=0.125)  # per image token
PREFILL = LinearCost(base_ms=1.0, per_unit_ms=0.25)
DECODE = DecodeCost(base_ms=3.0, per_seq_ms=0.5, per_context_token_ms=1 / 128)


class WorkClock:
    """Moves only when the engine works: by the fake cost of each encode and each step."""

    def __init__(self) -> None:
        self.now = 0.0  # seconds

    def __call__(self) -> float:
        return self.now

    def charge(self, ms: float) -> None:
        self.now += ms / 1e3


def with_fake_costs(engine: Engine, clock: WorkClock, monkeypatch) -> None:
    encode, run = engine.encode, engine.runner.run

    def timed_encode(images):
        clock.charge(ENCODE.predict(16 * len(images)))
        return encode(images)

    def timed_run(plan):
        if all(item.num_new_tokens == 1 for item in plan.scheduled):
            context = sum(item.request.num_computed_tokens + 1 for item in plan.scheduled)
            clock.charge(DECODE.predict(len(plan.scheduled), context))
        else:
            clock.charge(PREFILL.predict(plan.num_batched_tokens))
        return run(plan)

    monkeypatch.setattr(engine, "encode", timed_encode)
    monkeypatch.setattr(engine.runner, "run", timed_run)


def approx(cost):
    return pytest.approx(vars(cost), rel=1e-9, abs=1e-12)


def test_profiling_recovers_the_engines_costs_and_fills_the_tpot_with_them(
    tiny_model_dir, monkeypatch
):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="EPD", num_kv_blocks=64))
    clock = WorkClock()
    with_fake_costs(engine, clock, monkeypatch)
    profile = profile_worker(engine, tpot_target_ms=100.1, clock=clock)

    assert (vars(profile.encode), vars(profile.prefill)) == (approx(ENCODE), approx(PREFILL))
    assert vars(profile.decode) == approx(DECODE)
    assert profile.budgets == StepBudgets(max_num_batched_tokens=304, max_encode_images=37)
    assert (profile.tpot_target_ms, profile.image_tokens_per_image, profile.block_size) == (
        100.1, 16, 16,
    )  # fmt: skip
    assert profile.profile_ms == pytest.approx(clock.now * 1e3)


def test_without_a_tpot_target_the_budgets_are_the_configured_ones(tiny_model_dir):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="EPD", num_kv_blocks=64))
    profile = profile_worker(engine, tpot_target_ms=None)
    assert profile.budgets == StepBudgets(max_num_batched_tokens=512, max_encode_images=64)


def test_profiling_the_tiny_model_leaves_the_engine_as_loaded(tiny_model_dir):
    config = EngineConfig(model_dir=str(tiny_model_dir), stages="EPD", num_kv_blocks=64)
    engine = Engine(config)
    profile = profile_worker(engine, tpot_target_ms=200.0)

    # Real times on a shared machine: only the strongest trends are certain.
    assert profile.prefill.predict(512) > profile.prefill.predict(16) > 0
    assert profile.encode.predict(4 * 16) >= profile.encode.predict(16) > 0
    assert profile.decode.predict(16, 16 * 256) >= profile.decode.predict(1, 32) > 0
    assert engine.stats() == EngineStats(
        num_waiting=0,
        num_running=0,
        num_kv_blocks=64,
        num_free_blocks=64,
        num_cached_blocks=0,
        num_used_blocks=0,
        num_preemptions=0,
        prefix_cache_hit_rate=0.0,
        embedding_cache_hit_rate=0.0,
    )
    assert (len(engine.embedding_cache), engine.block_pool.num_hashed_blocks) == (0, 0)
    assert engine.block_pool.cache_delta.is_empty()
    assert engine.embedding_cache.cache_delta.is_empty()

    fresh = Engine(config)
    prompt = list(range(5, 45))
    for each in (engine, fresh):
        each.add_request("r1", prompt, GREEDY)
    assert engine.run_to_completion() == fresh.run_to_completion()
    assert engine.stats() == fresh.stats()  # no prefix hit on a profiling leftover


@pytest.mark.parametrize("stages,measured", [("E", "encode"), ("P", "prefill"), ("D", "decode")])
def test_a_worker_measures_only_the_stages_it_runs(tiny_model_dir, stages, measured):
    engine = Engine(EngineConfig(model_dir=str(tiny_model_dir), stages=stages, num_kv_blocks=64))
    profile = profile_worker(engine, tpot_target_ms=200.0)  # D: decodes imported KV
    costs = {"encode": profile.encode, "prefill": profile.prefill, "decode": profile.decode}
    assert [name for name, cost in costs.items() if cost is not None] == [measured]
    assert not engine.has_unfinished_requests()


def test_a_worker_profiled_at_start_runs_with_its_budgets_and_gives_the_same_tokens(
    tiny_model_dir, transport, start_worker, cat_request
):
    expected = colocated_tokens(start_worker("epd-0", "EPD"), cat_request, "r1")
    engine = EngineConfig(model_dir=str(tiny_model_dir), stages="EPD", num_kv_blocks=32)
    # A TPOT no decode step meets: the smallest budgets, one block of tokens and one image.
    config = WorkerConfig(
        worker_id="epd-1", engine=engine, profile_at_start=True, tpot_target_ms=1e-3
    )
    worker = WorkerCore(config, transport)
    try:
        assert worker.budgets == StepBudgets(max_num_batched_tokens=16, max_encode_images=1)
        assert worker.engine.batcher.token_budget == 16
        assert worker.load().profile == worker.profile
        assert worker.profile.budgets == worker.budgets
        assert worker.poll(0.0).load.profile is None  # only an explicit load() carries it
        assert colocated_tokens(worker, cat_request, "r1") == expected  # in chunks of 16
    finally:
        worker.close()


def test_workers_on_one_machine_profile_one_at_a_time():
    with _one_profile_at_a_time(), open(PROFILING_LOCK, "a") as another_worker:
        with pytest.raises(BlockingIOError):
            fcntl.flock(another_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(PROFILING_LOCK, "a") as another_worker:
        fcntl.flock(another_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
