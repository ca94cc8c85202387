"""Prompts and images are prepared exactly as transformers' LLaVA processor prepares them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tests.support import make_image
from workers.contract.engine_config import EngineConfig
from workers.contract.errors import InvalidImageError, InvalidRequestError, PromptTooLongError
from workers.contract.images import decode_image
from workers.contract.sampling_params import SamplingParams
from workers.engine.engine import Engine
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import PromptBuilder

CASES = [
    ("plain text, no image", []),
    ("USER: <image>\nWhat is shown? ASSISTANT:", [make_image(1, (40, 52))]),
    ("<image><image> side by side", [make_image(2, (90, 20)), make_image(3, (17, 33))]),
]


@pytest.mark.parametrize("text,images", CASES)
def test_prompt_tokens_and_pixels_match_the_llava_processor(model_dir, oracle_for, text, images):
    builder = PromptBuilder(model_dir, ModelConfig.from_pretrained(model_dir))
    expected = oracle_for(model_dir).inputs(text, images)
    assert builder.build(text, images).token_ids == expected["input_ids"][0].tolist()
    if images:
        ours = builder.pixel_values(images)
        np.testing.assert_allclose(ours, expected["pixel_values"].numpy(), atol=1e-6, rtol=0)


def test_encode_matches_transformers_image_features(model_dir, oracle_for):
    oracle = oracle_for(model_dir)
    images = [make_image(4), make_image(5, (30, 70))]
    encoder = Engine(EngineConfig(model_dir=str(model_dir), stages="E"))
    ours = encoder.encode(images)
    pixel_values = oracle.inputs("<image><image>", images)["pixel_values"]
    with torch.no_grad():
        theirs = oracle.model.get_image_features(pixel_values=pixel_values).pooler_output
    for embedding, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(embedding.embeddings, reference.numpy(), atol=1e-5, rtol=1e-5)
    assert encoder.encode(images[:1])[0].embeddings is ours[0].embeddings  # LRU cache hit
    assert encoder.stats().embedding_cache_hit_rate == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir) -> Engine:
    return Engine(EngineConfig(model_dir=str(tiny_model_dir), num_kv_blocks=8))


def test_bad_prompts_are_rejected_with_clear_errors(tiny_engine):
    image_id = tiny_engine.model_config.image_token_index
    with pytest.raises(InvalidRequestError, match="empty"):
        tiny_engine.add_request("empty", [])
    with pytest.raises(InvalidRequestError, match="token ids must be in"):
        tiny_engine.add_request("oov", [1, 10**6])
    with pytest.raises(PromptTooLongError, match="does not fit the context"):
        tiny_engine.add_request("long", [5] * 5000)
    with pytest.raises(PromptTooLongError, match="this worker holds 128"):
        tiny_engine.add_request("big", [5] * 100, SamplingParams(max_tokens=100))
    with pytest.raises(InvalidImageError, match="16 image placeholder tokens; 0 images need 0"):
        tiny_engine.add_request("missing image", [1, *[image_id] * 16])
    assert not tiny_engine.has_unfinished_requests()


def test_prompt_with_mismatched_images_is_rejected(tiny_model_dir):
    builder = PromptBuilder(tiny_model_dir, ModelConfig.from_pretrained(tiny_model_dir))
    with pytest.raises(InvalidImageError, match="1 <image> slots but 2 images"):
        builder.build("one <image> slot", [make_image(1), make_image(2)])
    with pytest.raises(InvalidRequestError, match="empty"):
        builder.build("   ", [])


def test_corrupt_image_bytes_raise_invalid_image():
    with pytest.raises(InvalidImageError, match="cannot decode image"):
        decode_image(b"\x89PNG\r\n\x1a\nnot really a png")
    png = io.BytesIO()
    make_image(0).save(png, format="PNG")
    truncated = png.getvalue()[: len(png.getvalue()) // 2]
    with pytest.raises(InvalidImageError):
        decode_image(truncated)
