"""Prefill order on a worker: an urgent short prompt (a lower priority value, as the global
scheduler sends for text behind rocks) gets the step's token budget before the remaining
chunks of a long prompt admitted earlier; with equal priorities the order is unchanged."""

from __future__ import annotations

from tests.unit.test_batcher import batch


def test_urgent_short_prompt_overtakes_the_chunks_of_a_long_one(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=8)
    rock = engine.add("rock", list(range(1, 33)), max_tokens=2, priority=500.0)
    first = engine.step()
    text = engine.add("text", [7, 8, 9], max_tokens=2, priority=100.0)

    second = engine.step()
    plans = engine.run_to_completion()

    assert batch(first) == [("rock", 8)]
    assert batch(second) == [("text", 3), ("rock", 5)]  # the rock gets what is left
    assert text.output_token_ids == engine.reference_output([7, 8, 9], 2)
    assert rock.output_token_ids == engine.reference_output(list(range(1, 33)), 2)
    assert sum(n for p in plans for name, n in batch(p) if name == "rock") == 32 - 13 + 1


def test_equal_priorities_keep_first_come_first_served(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=8)
    engine.add("long", list(range(1, 33)), max_tokens=2)
    engine.step()
    engine.add("short", [7, 8, 9], max_tokens=2)

    assert batch(engine.step()) == [("long", 8)]


def test_waiting_requests_are_admitted_in_priority_order(make_engine):
    engine = make_engine(block_size=4, max_num_batched_tokens=16)
    engine.add("late", [1, 2, 3], priority=300.0)
    engine.add("urgent", [4, 5, 6], priority=100.0)
    engine.add("same", [7, 8, 9], priority=300.0)

    assert batch(engine.step()) == [("urgent", 3), ("late", 3), ("same", 3)]
