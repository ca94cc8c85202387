"""What constrained decoding costs a decode step: the same batch of requests, decoded with and
without a grammar, side by side in one run (alternating, so drift hits both alike).

The grammar is a run of NUM_CALLS tool-call-like JSON objects, each with a name and arguments: every
step computes a real JSON mask, and no answer can be complete (nor allow EOS) before max_tokens,
so both sides time the same number of steps at the same batch size. Only
pure decode steps (every request already has its first token) are timed.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

from bench.engine.membw import synchronize
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine

NUM_CALLS = 100  # far more than max_tokens can finish
CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"enum": ["get_weather", "search_flights", "book_table"]},
        "arguments": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
}


def endless_calls_grammar() -> str:
    import llguidance

    schema = json.dumps({**CALL_SCHEMA, "x-guidance": {"whitespace_flexible": False}})
    return llguidance.grammar_from("lark", f"start: call~{NUM_CALLS}\ncall: %json{schema}")


@dataclass(frozen=True)
class GrammarSizes:
    batch_size: int = 16
    prompt_tokens: int = 64
    new_tokens: int = 64
    repeats: int = 3

    @classmethod
    def quick(cls) -> GrammarSizes:
        return cls(batch_size=4, prompt_tokens=16, new_tokens=8, repeats=1)


def decode_step_times(engine: Engine, prompts: list[list[int]], params: SamplingParams) -> list:
    """Seconds of each pure decode step of one batch run to max_tokens."""
    for i, prompt in enumerate(prompts):
        engine.add_request(f"grammar-bench-{time.monotonic_ns()}-{i}", prompt, params)
    started = set()
    times = []
    while engine.has_unfinished_requests():
        is_decode_only = len(started) == len(prompts)
        step_start = time.perf_counter()
        outputs = engine.step()
        synchronize(engine.device)
        if is_decode_only and len(outputs) == len(prompts):
            times.append(time.perf_counter() - step_start)
        started.update(out.request_id for out in outputs)
    return times


def bench_grammar(engine: Engine, prompts: list[list[int]], sizes: GrammarSizes) -> dict:
    """ms per decode step at `sizes.batch_size`, free vs grammar-constrained (seeded sampling,
    EOS ignored)."""
    free = SamplingParams(max_tokens=sizes.new_tokens, temperature=1.0, seed=0, ignore_eos=True)
    constrained = SamplingParams(
        max_tokens=sizes.new_tokens,
        temperature=1.0,
        seed=0,
        ignore_eos=True,
        grammar=endless_calls_grammar(),
    )
    runs = {"free": [], "grammar": []}
    decode_step_times(engine, prompts[:2], constrained)  # warm-up: llguidance's token tables
    for _ in range(sizes.repeats):
        for name, params in (("free", free), ("grammar", constrained)):
            runs[name] += decode_step_times(engine, prompts, params)
    ms = {name: statistics.median(t) * 1e3 for name, t in runs.items()}
    return {
        "batch_size": len(prompts),
        "prompt_tokens": sizes.prompt_tokens,
        "new_tokens": sizes.new_tokens,
        "free_ms_per_step": ms["free"],
        "grammar_ms_per_step": ms["grammar"],
        "num_steps": {name: len(t) for name, t in runs.items()},
        "slowdown": ms["grammar"] / ms["free"] - 1.0,
    }
