"""Sampling, stop conditions and reduced precision through the whole engine."""

from __future__ import annotations

import pytest
import torch

from tests.support import make_image
from workers.contract.engine_config import EngineConfig
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.prompt import PromptBuilder
from workers.engine.sampler import sample

PROMPT = "USER: <image>\nWrite a long answer about this. ASSISTANT:"


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir)))


def run(engine: Engine, params: SamplingParams, request_id: str = "r"):
    image = make_image(11)
    builder = PromptBuilder(engine.config.model_dir, engine.model_config, engine.tokenizer)
    prompt = builder.build(PROMPT, [image])
    engine.add_request(request_id, prompt.token_ids, params, images=engine.encode([image]))
    return engine.run_to_completion()[request_id]


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    greedy = logits.argmax(-1).tolist()
    top_k_1 = SamplingParams(temperature=1.5, top_k=1, seed=3)
    tiny_top_p = SamplingParams(temperature=1.5, top_p=1e-6, seed=3)
    assert sample(logits, [top_k_1] * 4, [0, 1, 2, 3]) == greedy
    assert sample(logits, [tiny_top_p] * 4, [0, 1, 2, 3]) == greedy


def test_sampled_tokens_stay_inside_top_k():
    logits = torch.randn(1, 100, generator=torch.Generator().manual_seed(1))
    allowed = set(torch.topk(logits[0], 5).indices.tolist())
    params = SamplingParams(temperature=2.0, top_k=5, seed=9)
    drawn = {sample(logits, [params], [i])[0] for i in range(200)}
    assert drawn <= allowed and len(drawn) > 1


def test_same_seed_same_tokens_other_seed_other_tokens(engine):
    params = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.95, seed=42, ignore_eos=True)
    first = run(engine, params, "a").token_ids
    assert run(engine, params, "b").token_ids == first
    other = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.95, seed=43, ignore_eos=True)
    assert run(engine, other, "c").token_ids != first


def test_stop_string_and_stop_token_end_generation_early(engine):
    greedy = run(engine, SamplingParams(max_tokens=32, ignore_eos=True)).token_ids
    text = engine.detokenize(greedy)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped = run(engine, SamplingParams(max_tokens=32, ignore_eos=True, stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert stop in engine.detokenize(stopped.token_ids)
    assert stopped.token_ids == greedy[: len(stopped.token_ids)] and len(stopped.token_ids) < 32

    by_token = run(engine, SamplingParams(max_tokens=32, stop_token_ids=[greedy[5]]))
    assert by_token.finish_reason == "stop"
    assert by_token.token_ids == greedy[: greedy.index(greedy[5]) + 1]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_disaggregated_matches_colocated_in_reduced_precision(tiny_model_dir, dtype):
    config = dict(model_dir=str(tiny_model_dir), dtype=dtype)
    colocated = Engine(EngineConfig(**config))
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    expected = run(colocated, params).token_ids

    prefiller = Engine(EngineConfig(stages="EP", **config))
    decoder = Engine(EngineConfig(stages="D", **config))
    builder = PromptBuilder(tiny_model_dir, prefiller.model_config, prefiller.tokenizer)
    image = make_image(11)
    prompt = builder.build(PROMPT, [image]).token_ids
    prefiller.add_request("r", prompt, params, images=prefiller.encode([image]), export_kv=True)
    (handoff,) = prefiller.step()
    assert handoff.prefill.kv.dtype == dtype
    decoder.add_prefilled(handoff.prefill, params)
    rest = decoder.run_to_completion()["r"].token_ids
    assert [*handoff.new_token_ids, *rest] == expected
