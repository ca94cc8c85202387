"""A request resumed after its first k outputs (a re-drive after a lost decode worker) gives
exactly the tokens the uninterrupted run gives after them: same positions, same seeds, the same
max_tokens and stop conditions."""

from __future__ import annotations

import pytest

from tests.support import make_image
from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidRequestError
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.prompt import PromptBuilder

IMAGE_PROMPT = "USER: <image>\nWrite a long answer about this. ASSISTANT:"
TEXT_PROMPT = "USER: Tell me a long story about a lighthouse keeper. ASSISTANT:"
GREEDY = SamplingParams(max_tokens=24, ignore_eos=True)
SEEDED = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.95, seed=7, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir)))


def build(engine: Engine, text: str, with_image: bool):
    """(prompt token ids, image embeddings) of a prompt, with one image or none."""
    builder = PromptBuilder(engine.config.model_dir, engine.model_config, engine.tokenizer)
    images = [make_image(11)] if with_image else []
    prompt = builder.build(text, images).token_ids
    return list(prompt), engine.encode(images) if images else []


def generate(engine: Engine, request_id: str, prompt, images, params, num_resumed: int = 0):
    engine.add_request(request_id, prompt, params, images=images, num_resumed_tokens=num_resumed)
    return engine.run_to_completion()[request_id]


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_resumed_request_continues_the_uninterrupted_one_token_for_token(
    engine, params, with_image
):
    text = IMAGE_PROMPT if with_image else TEXT_PROMPT
    prompt, images = build(engine, text, with_image)
    full = generate(engine, "full", prompt, images, params)
    assert len(full.token_ids) == params.max_tokens and full.finish_reason == "length"
    for k in (1, 5, 17):
        resumed = generate(
            engine, f"resumed-{k}", prompt + full.token_ids[:k], images, params, num_resumed=k
        )
        assert resumed.token_ids == full.token_ids[k:], f"resumed after {k} tokens"
        assert resumed.finish_reason == "length"


def test_seeded_resume_is_not_a_fresh_request_on_the_longer_prompt(engine):
    """The sampler draws at the resumed output index: a plain request on the same tokens (its
    outputs counted from 0) draws other tokens."""
    prompt, _ = build(engine, TEXT_PROMPT, with_image=False)
    full = generate(engine, "full", prompt, [], SEEDED).token_ids
    prefix = prompt + full[:5]
    resumed = generate(engine, "resumed", prefix, [], SEEDED, num_resumed=5).token_ids
    fresh = generate(engine, "fresh", prefix, [], SEEDED).token_ids
    assert resumed == full[5:]
    assert fresh[: len(resumed)] != resumed


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_resumed_request_handed_off_to_a_decoder_continues_the_uninterrupted_one(
    tiny_model_dir, engine, params
):
    prompt, images = build(engine, IMAGE_PROMPT, with_image=True)
    full = generate(engine, "full", prompt, images, params).token_ids
    config = dict(model_dir=str(tiny_model_dir))
    prefiller = Engine(EngineConfig(stages="EP", **config))
    decoder = Engine(EngineConfig(stages="D", **config))
    k = 9
    prefiller.add_request(
        "r", prompt + full[:k], params, images=images, export_kv=True, num_resumed_tokens=k
    )
    (handoff,) = prefiller.step()
    assert handoff.prefill.num_resumed_tokens == k
    assert handoff.prefill.prompt_token_ids == prompt + full[:k]
    assert handoff.prefill.kv.num_tokens == len(prompt) + k
    decoder.add_prefilled(handoff.prefill, params)
    rest = decoder.run_to_completion()["r"].token_ids
    assert [*handoff.new_token_ids, *rest] == full[k:]


def test_resumed_request_keeps_stop_token_and_max_tokens_from_the_original_start(engine):
    prompt, _ = build(engine, TEXT_PROMPT, with_image=False)
    full = generate(engine, "full", prompt, [], GREEDY).token_ids
    first = next(j for j in range(4, len(full)) if full.index(full[j]) == j)  # its first time
    stopping = SamplingParams(max_tokens=24, ignore_eos=True, stop_token_ids=[full[first]])
    expected = generate(engine, "stopping", prompt, [], stopping)
    assert expected.token_ids == full[: first + 1] and expected.finish_reason == "stop"
    k = 3
    resumed = generate(engine, "resumed", prompt + full[:k], [], stopping, num_resumed=k)
    assert resumed.token_ids == expected.token_ids[k:] and resumed.finish_reason == "stop"

    last = generate(engine, "last", prompt + full[:23], [], GREEDY, num_resumed=23)
    assert last.token_ids == full[23:] and last.finish_reason == "length"


def test_resuming_after_max_tokens_outputs_is_refused(engine):
    prompt, _ = build(engine, TEXT_PROMPT, with_image=False)
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    with pytest.raises(InvalidRequestError, match="cannot resume after 4 outputs"):
        engine.add_request("done", prompt + [5, 6, 7, 8], params, num_resumed_tokens=4)
