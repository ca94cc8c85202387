"""Grammar-constrained decoding in the engine: answers follow their JSON schema even from a
random-weight model, stop when the grammar is complete, and a prefill worker's first token under
the mask is continued by a decode worker exactly as a colocated engine continues it."""

from __future__ import annotations

import json

import jsonschema
import llguidance
import pytest
import torch

from tests.support import make_image
from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidRequestError
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.grammar import apply_grammar_masks
from workers.engine.prompt import PromptBuilder

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
PROMPT = "USER: <image>\nWhat is the weather like? Answer in JSON. ASSISTANT:"


def schema_grammar(schema: dict) -> str:
    return llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), overrides={"whitespace_flexible": False}
    )


def params(seed: int, temperature: float = 1.0) -> SamplingParams:
    return SamplingParams(
        max_tokens=200, temperature=temperature, seed=seed, grammar=schema_grammar(SCHEMA)
    )


@pytest.fixture(scope="module")
def colocated(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def prefill(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="EP"))


@pytest.fixture(scope="module")
def decode(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir), stages="D"))


def prompt_of(engine: Engine):
    builder = PromptBuilder(engine.config.model_dir, engine.model_config, engine.tokenizer)
    images = [make_image(3)]
    return builder.build(PROMPT, images).token_ids, engine.encode(images)


def test_answers_validate_against_the_schema_over_many_seeds(colocated):
    prompt, images = prompt_of(colocated)
    for seed in range(12):
        colocated.add_request(f"r{seed}", prompt, params(seed), images=images)
    for seed, done in colocated.run_to_completion().items():
        assert done.finish_reason == "stop", seed
        answer = json.loads(colocated.detokenize(done.token_ids))
        jsonschema.validate(answer, SCHEMA)


def test_greedy_constrained_answer_is_valid_too(colocated):
    prompt, images = prompt_of(colocated)
    colocated.add_request("greedy", prompt, params(0, temperature=0.0), images=images)
    done = colocated.run_to_completion()["greedy"]
    jsonschema.validate(json.loads(colocated.detokenize(done.token_ids)), SCHEMA)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_disaggregated_answer_equals_the_colocated_one(colocated, prefill, decode, seed):
    prompt, images = prompt_of(colocated)
    colocated.add_request("whole", prompt, params(seed), images=images)
    whole = colocated.run_to_completion()["whole"]

    prefill.add_request("split", prompt, params(seed), images=images, export_kv=True)
    (handoff,) = [out for out in prefill.step() if out.prefill is not None]
    decode.add_prefilled(handoff.prefill, params(seed))
    rest = decode.run_to_completion()["split"]
    assert [handoff.prefill.first_token_id, *rest.token_ids] == whole.token_ids
    assert rest.finish_reason == whole.finish_reason == "stop"


def test_resumed_request_replays_its_outputs_through_the_grammar(colocated):
    prompt, images = prompt_of(colocated)
    colocated.add_request("full", prompt, params(5), images=images)
    full = colocated.run_to_completion()["full"]
    k = 4
    colocated.add_request(
        "resumed", prompt + full.token_ids[:k], params(5), images=images, num_resumed_tokens=k
    )
    assert colocated.run_to_completion()["resumed"].token_ids == full.token_ids[k:]


def test_an_invalid_grammar_is_refused_at_the_engine_entry(colocated):
    prompt, images = prompt_of(colocated)
    bad = SamplingParams(grammar='{"grammars": [{"lark_grammar": "start: nope"}]}')
    with pytest.raises(InvalidRequestError, match="grammar"):
        colocated.add_request("bad", prompt, bad, images=images)
    assert not colocated.has_unfinished_requests()


def test_masks_touch_only_the_constrained_rows(colocated):
    matcher = colocated.grammars.matcher(schema_grammar({"enum": ["yes"]}))
    logits = torch.zeros(2, colocated.model_config.text.vocab_size)
    apply_grammar_masks(logits, [None, matcher])
    assert torch.isfinite(logits[0]).all()
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    texts = {colocated.tokenizer.decode([t]) for t in allowed}
    assert allowed and all('"yes"'.startswith(text) for text in texts)
