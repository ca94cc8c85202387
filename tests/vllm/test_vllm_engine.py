"""The vLLM engine behind Triserve's engine interface: the same greedy tokens as Triserve's engine
(fp32), colocated and with the KV handed off (vLLM to vLLM, and across the two engines both
ways), the same errors for bad input, aborts, constrained decoding and prefix-cache reports."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.support import make_image
from tests.vllm.conftest import BLOCK_SIZE
from workers.contract.block_hash import extend_block_hashes
from workers.contract.errors import InvalidImageError, InvalidRequestError, PromptTooLongError
from workers.contract.sampling_params import SamplingParams
from workers.engine.image_spans import find_image_spans

CASES = {
    "text": ("USER: what is the capital of the moon? ASSISTANT:", []),
    "one image": ("USER: <image>\nWhat is shown? ASSISTANT:", [make_image(1, (40, 52))]),
    "two images": ("<image><image> side by side", [make_image(2, (90, 20)), make_image(3)]),
    "long, one image": (
        "<image> " + " ".join(f"word{i}" for i in range(80)),
        [make_image(4, (33, 61))],
    ),
    "fresh": ("<image> " + " ".join(f"term{i}" for i in range(80)), [make_image(5, (20, 20))]),
}
NUM_TOKENS = 12
_ids = itertools.count()


def greedy(max_tokens: int = NUM_TOKENS, **changes) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, **changes)


def run(engine, prompts, case: str, params: SamplingParams | None = None, export_kv=False):
    """(tokens, finish reason, PrefillResult or None) of one request run to its end."""
    text, images = CASES[case]
    request_id = f"r{next(_ids)}"
    embeddings = engine.encode(images) if images else []
    engine.add_request(
        request_id, prompts.build(text, images).token_ids, params or greedy(),
        images=embeddings, export_kv=export_kv,
    )  # fmt: skip
    return drain(engine, request_id)


def drain(engine, request_id: str):
    tokens, finish, prefill = [], None, None
    while engine.has_unfinished_requests():
        for out in engine.step():
            assert out.request_id == request_id
            tokens += out.new_token_ids
            finish = out.finish_reason or finish
            prefill = out.prefill or prefill
    return tokens, finish, prefill


def handed_off(prefill_engine, decode_engine, prompts, case: str, params=None):
    """Prefill on one engine, decode on the other from the exported KV."""
    params = params or greedy()
    first, finish, prefill = run(prefill_engine, prompts, case, params, export_kv=True)
    assert finish is None and prefill is not None and first == [prefill.first_token_id]
    decode_engine.add_prefilled(prefill, params)
    rest, finish, _ = drain(decode_engine, prefill.request_id)
    return first + rest, finish


PARITY_CASES = ["text", "one image", "two images", "long, one image"]


@pytest.mark.parametrize("case", PARITY_CASES)
def test_colocated_tokens_equal_triserves_engine(vllm_engine, native_engine, prompts, case):
    ours = run(native_engine, prompts, case)
    theirs = run(vllm_engine, prompts, case)
    assert theirs[:2] == ours[:2] and len(ours[0]) == NUM_TOKENS and ours[1] == "length"


@pytest.mark.parametrize("case", PARITY_CASES)
@pytest.mark.parametrize("direction", ["vllm->vllm", "native->vllm", "vllm->native"])
def test_handed_off_kv_decodes_to_the_same_tokens(
    vllm_engine, native_engine, prompts, case, direction
):
    engines = {"vllm": vllm_engine, "native": native_engine}
    prefill_name, decode_name = direction.split("->")
    expected = run(native_engine, prompts, case)[:2]
    assert handed_off(engines[prefill_name], engines[decode_name], prompts, case) == expected


def test_exported_kv_is_triserves_layout_and_values(vllm_engine, native_engine, prompts):
    _, _, theirs = run(vllm_engine, prompts, "one image", export_kv=True)
    _, _, ours = run(native_engine, prompts, "one image", export_kv=True)
    assert theirs.kv.kv.shape == ours.kv.kv.shape and theirs.kv.dtype == ours.kv.dtype == "float32"
    assert abs(theirs.kv.kv - ours.kv.kv).max() < 1e-4
    assert theirs.prompt_token_ids == ours.prompt_token_ids
    assert theirs.image_spans == ours.image_spans


def test_a_first_token_that_ends_the_request_is_not_handed_off(vllm_engine, prompts):
    tokens, finish, prefill = run(vllm_engine, prompts, "text", greedy(1), export_kv=True)
    assert len(tokens) == 1 and finish == "length" and prefill is not None


def test_bad_input_gets_triserves_errors_and_harms_nothing(vllm_engine, native_engine, prompts):
    spec = vllm_engine.spec
    with pytest.raises(InvalidRequestError, match="empty"):
        vllm_engine.add_request("bad", [], greedy())
    with pytest.raises(InvalidRequestError, match="token ids must be in"):
        vllm_engine.add_request("bad", [1, spec.vocab_size], greedy())
    with pytest.raises(PromptTooLongError):
        vllm_engine.add_request("bad", [5] * spec.max_model_len, greedy())
    with pytest.raises(InvalidImageError):
        vllm_engine.add_request("bad", [1, spec.image_token_id, 5], greedy())
    assert not vllm_engine.has_unfinished_requests()
    assert run(vllm_engine, prompts, "text")[:2] == run(native_engine, prompts, "text")[:2]


def test_abort_ends_the_stream_and_frees_the_blocks(vllm_engine, prompts):
    free_before = vllm_engine.stats().num_free_blocks
    vllm_engine.add_request("gone", prompts.build("hello there", []).token_ids, greedy(200))
    vllm_engine.step()
    assert vllm_engine.abort("gone") and not vllm_engine.abort("gone")
    outputs = vllm_engine.step()
    assert [(o.request_id, o.finish_reason) for o in outputs] == [("gone", "abort")]
    while vllm_engine.has_unfinished_requests():
        assert not vllm_engine.step()
    assert vllm_engine.stats().num_free_blocks == free_before


def test_prefix_cache_is_reported_in_triserves_block_hashes(vllm_engine, prompts):
    """The blocks vLLM caches arrive as Triserve's hashes of the same tokens and images, which
    is what the scheduler's cache directory computes for a request."""
    vllm_engine.take_prefix_cache_delta()
    text, images = CASES["fresh"]
    tokens = prompts.build(text, images).token_ids
    spans = find_image_spans(tokens, vllm_engine.spec.image_token_id, vllm_engine.encode(images))
    expected = extend_block_hashes([], tokens, len(tokens), BLOCK_SIZE, spans)
    run(vllm_engine, prompts, "fresh")
    added = set(vllm_engine.take_prefix_cache_delta().added)
    assert len(expected) == len(tokens) // BLOCK_SIZE >= 5
    assert set(expected) <= added <= set(vllm_engine.prefix_cache_hashes())
    hits_before = vllm_engine.stats().prefix_cache_hit_rate
    run(vllm_engine, prompts, "fresh")
    assert vllm_engine.stats().prefix_cache_hit_rate > hits_before


JSON_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "boolean"}},
    "required": ["a"],
    "additionalProperties": False,
}


def test_constrained_decoding_follows_the_grammar_colocated_and_handed_off(
    vllm_engine, native_engine, prompts
):
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(JSON_SCHEMA), defaults={"whitespace_flexible": False}
    )
    params = SamplingParams(max_tokens=40, grammar=grammar)
    colocated, finish, _ = run(vllm_engine, prompts, "text", params)
    assert finish == "stop"
    assert json.loads(native_engine.detokenize(colocated)).keys() == {"a"}
    assert handed_off(vllm_engine, vllm_engine, prompts, "text", params) == (colocated, "stop")
    assert run(native_engine, prompts, "text", params)[:2] == (colocated, "stop")


def test_seeded_sampling_repeats_on_vllm(vllm_engine, prompts):
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7, ignore_eos=True)
    first = run(vllm_engine, prompts, "text", params)
    assert run(vllm_engine, prompts, "text", params)[0] == first[0]


@pytest.mark.parametrize("case", ["text", "one image"])
def test_a_re_driven_request_resumes_after_the_tokens_already_sent(vllm_engine, prompts, case):
    """A request re-driven after a lost worker: its prompt plus the 5 tokens already streamed,
    marked resumed, continues exactly where the lost run would have."""
    whole, _, _ = run(vllm_engine, prompts, case)
    text, images = CASES[case]
    tokens = prompts.build(text, images).token_ids + whole[:5]
    embeddings = vllm_engine.encode(images) if images else []
    vllm_engine.add_request("resumed", tokens, greedy(), images=embeddings, num_resumed_tokens=5)
    rest, finish, _ = drain(vllm_engine, "resumed")
    assert whole[:5] + rest == whole and finish == "length"
