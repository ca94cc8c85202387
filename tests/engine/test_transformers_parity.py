"""The correctness oracle: greedy fp32 output equals transformers' `generate`, token for token,
on the same checkpoint, through every engine path (batching, prefix cache, chunked prefill,
KV export/import, preemption)."""

from __future__ import annotations

import pytest

from tests.support import make_image, rewrite_as_legacy_sharded
from workers.contract.engine_config import EngineConfig
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.prompt import PromptBuilder

PROMPTS = {
    "text": ("Tell me a story about a dragon and a very small castle by the sea.", []),
    "one_image": ("USER: <image>\nWhat is in this picture? ASSISTANT:", [make_image(1)]),
    "two_images": (
        "Compare <image> with <image> carefully.",
        [make_image(2), make_image(3, (64, 30))],
    ),
}


def engine_for(model_dir, **overrides) -> Engine:
    return Engine(EngineConfig(model_dir=str(model_dir), **overrides))


def submit(engine: Engine, request_id: str, text: str, images, max_tokens: int, **kw) -> None:
    prompt = PromptBuilder(engine.config.model_dir, engine.model_config, engine.tokenizer)
    token_ids = prompt.build(text, images).token_ids
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    engine.add_request(request_id, token_ids, params, images=engine.encode(images), **kw)


@pytest.mark.parametrize("case", sorted(PROMPTS))
def test_single_request_matches_transformers(model_dir, oracle_for, case):
    text, images = PROMPTS[case]
    engine = engine_for(model_dir)
    submit(engine, case, text, images, max_tokens=24)
    assert engine.run_to_completion()[case].token_ids == oracle_for(model_dir).generate(
        text, images, 24
    )


def run_collecting(engine: Engine, first_outputs=()) -> dict[str, list[int]]:
    tokens: dict[str, list[int]] = {}
    for out in first_outputs:
        tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    for request_id, done in engine.run_to_completion().items():
        tokens.setdefault(request_id, []).extend(done.token_ids)
    return tokens


def test_mixed_batch_decoded_together_matches_transformers(model_dir, oracle_for):
    engine = engine_for(model_dir)
    lengths = {"text": 30, "one_image": 12, "two_images": 20}
    for case, (text, images) in PROMPTS.items():
        submit(engine, case, text, images, max_tokens=lengths[case])
    first = engine.step()
    assert sorted(out.request_id for out in first) == sorted(PROMPTS)  # one batch from step 1
    results = run_collecting(engine, first)
    oracle = oracle_for(model_dir)
    for case, (text, images) in PROMPTS.items():
        assert results[case] == oracle.generate(text, images, lengths[case]), case


def test_prefix_cache_hit_matches_transformers(model_dir, oracle_for):
    engine = engine_for(model_dir)
    shared = "USER: <image>\nPlease describe this image in great detail, every corner of it. "
    image = make_image(5)
    submit(engine, "first", shared + "Start with colours.", [image], max_tokens=4)
    engine.run_to_completion()
    second = shared + "Then the shapes. ASSISTANT:"
    submit(engine, "second", second, [image], max_tokens=16)
    request = engine.batcher.waiting[0]
    results = engine.run_to_completion()
    assert request.num_cached_tokens >= 2 * engine.config.block_size
    assert results["second"].token_ids == oracle_for(model_dir).generate(second, [image], 16)


def test_same_text_with_another_image_never_hits_the_prefix_cache(tiny_model_dir, oracle_for):
    engine = engine_for(tiny_model_dir)
    text = "<image> is the picture; tell me everything you can about it, in order."
    submit(engine, "a", text, [make_image(6)], max_tokens=2)
    engine.run_to_completion()
    other = make_image(7)
    submit(engine, "b", text, [other], max_tokens=12)
    request = engine.batcher.waiting[0]
    results = engine.run_to_completion()
    assert request.num_cached_tokens == 0
    assert results["b"].token_ids == oracle_for(tiny_model_dir).generate(text, [other], 12)


def test_chunked_prefill_matches_transformers(model_dir, oracle_for):
    engine = engine_for(model_dir, max_num_batched_tokens=7)
    text, images = PROMPTS["two_images"]
    submit(engine, "chunked", text, images, max_tokens=16)
    first = [engine.step() for _ in range(3)]
    assert first == [[], [], []]  # 21 of the prompt's tokens computed, no token sampled yet
    assert engine.batcher.running[0].num_computed_tokens == 21
    results = run_collecting(engine)
    assert results["chunked"] == oracle_for(model_dir).generate(text, images, 16)


def test_kv_exported_to_numpy_and_imported_by_separate_decoder(model_dir, oracle_for):
    encoder = engine_for(model_dir, stages="E")
    prefiller = engine_for(model_dir, stages="P")
    decoder = engine_for(model_dir, stages="D")
    assert encoder.model.language_model is None
    assert decoder.model.vision_tower is None and decoder.model.multi_modal_projector is None

    oracle = oracle_for(model_dir)
    text_config = prefiller.model_config.text
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    for case, (text, images) in PROMPTS.items():
        token_ids = PromptBuilder(model_dir, prefiller.model_config).build(text, images).token_ids
        prefiller.add_request(
            case, token_ids, params, images=encoder.encode(images), export_kv=True
        )
        outputs = []
        while prefiller.has_unfinished_requests():
            outputs += prefiller.step()
        (handoff,) = outputs
        assert handoff.finish_reason is None and prefiller.stats().num_used_blocks == 0
        kv = handoff.prefill.kv.kv
        assert kv.flags["C_CONTIGUOUS"]
        assert kv.shape == (
            text_config.num_hidden_layers, 2, len(token_ids), text_config.num_key_value_heads,
            text_config.head_dim,
        )  # fmt: skip
        decoder.add_prefilled(handoff.prefill, params)
        rest = decoder.run_to_completion()[case].token_ids
        assert [*handoff.new_token_ids, *rest] == oracle.generate(text, images, 20), case


def test_run_forced_through_preemption_matches_transformers(model_dir, oracle_for):
    # 10 blocks of 16 slots cannot hold three ~40-token prompts growing by 40 tokens each.
    engine = engine_for(model_dir, num_kv_blocks=10)
    for case, (text, images) in PROMPTS.items():
        submit(engine, case, text, images, max_tokens=40)
    results = engine.run_to_completion()
    assert engine.stats().num_preemptions > 0
    assert engine.stats().num_used_blocks == 0
    oracle = oracle_for(model_dir)
    for case, (text, images) in PROMPTS.items():
        assert results[case].token_ids == oracle.generate(text, images, 40), case


def test_decoder_preempting_imported_requests_reimports_their_kv(tiny_model_dir, oracle_for):
    encoder_prefiller = engine_for(tiny_model_dir, stages="EP")
    decoder = engine_for(tiny_model_dir, stages="D", num_kv_blocks=10)
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    first_tokens = {}
    for case, (text, images) in PROMPTS.items():
        token_ids = PromptBuilder(tiny_model_dir, decoder.model_config).build(text, images)
        encoder_prefiller.add_request(
            case, token_ids.token_ids, params, encoder_prefiller.encode(images), export_kv=True
        )
        (handoff,) = encoder_prefiller.step()
        first_tokens[case] = handoff.new_token_ids
        decoder.add_prefilled(handoff.prefill, params)
    results = decoder.run_to_completion()
    assert decoder.stats().num_preemptions > 0
    oracle = oracle_for(tiny_model_dir)
    for case, (text, images) in PROMPTS.items():
        expected = oracle.generate(text, images, 40)
        assert first_tokens[case] + results[case].token_ids == expected, case


def test_legacy_sharded_checkpoint_loads_to_the_same_tokens(tiny_model_dir, tmp_path, oracle_for):
    legacy = rewrite_as_legacy_sharded(tiny_model_dir, tmp_path / "legacy")
    assert len(list(legacy.glob("*.safetensors"))) == 2
    text, images = PROMPTS["one_image"]
    engine = engine_for(legacy)
    submit(engine, "legacy", text, images, max_tokens=16)
    expected = oracle_for(tiny_model_dir).generate(text, images, 16)
    assert engine.run_to_completion()["legacy"].token_ids == expected


def test_generated_image_token_is_treated_as_text(image_token_model_dir, oracle_for):
    text, images = PROMPTS["one_image"]
    engine = engine_for(image_token_model_dir, num_kv_blocks=7)
    submit(engine, "a", text, images, max_tokens=30)
    submit(engine, "b", PROMPTS["two_images"][0], PROMPTS["two_images"][1], max_tokens=30)
    results = engine.run_to_completion()
    image_token = engine.model_config.image_token_index
    assert image_token in results["a"].token_ids
    assert engine.stats().num_preemptions > 0  # recompute re-reads generated placeholders too
    oracle = oracle_for(image_token_model_dir)
    assert results["a"].token_ids == oracle.generate(text, images, 30)
    assert results["b"].token_ids == oracle.generate(*PROMPTS["two_images"], 30)
