"""Helpers for tests: images, the transformers oracle, checkpoint layouts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

# A second architecture for parity tests: multi-query attention (6 query heads share one KV head)
# instead of tiny's 4:2, tied embeddings, llama3 RoPE scaling, CLS kept ("full"), features
# concatenated from two vision layers, other activations.
VARIANT_SPEC = dict(
    text_hidden=96,
    text_intermediate=160,
    text_layers=3,
    text_heads=6,
    text_kv_heads=1,
    tie_word_embeddings=True,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    vision_hidden=32,
    vision_layers=4,
    vision_heads=2,
    image_size=24,
    patch_size=6,
    vision_hidden_act="gelu",
    vision_feature_layer=[-1, -3],
    vision_feature_select_strategy="full",
    projector_hidden_act="quick_gelu",
    seed=1,
)


def make_image(seed: int, size: tuple[int, int] = (40, 52)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def make_png(seed: int, size: tuple[int, int] = (40, 52)) -> bytes:
    """make_image's picture, encoded as a client sends it."""
    buffer = io.BytesIO()
    make_image(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


class Oracle:
    """transformers' LlavaForConditionalGeneration on the same checkpoint: greedy, fp32."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
        # The PIL image processor, named: Triserve's preprocessing reproduces it exactly. With
        # torchvision installed (vLLM needs it) transformers would pick its torchvision one,
        # whose antialiased resize differs by up to 0.015 per pixel: another reference, not ours.
        self.processor = AutoProcessor.from_pretrained(model_dir, backend="pil")

    def inputs(self, text: str, images: list[Image.Image]):
        return self.processor(text=text, images=images or None, return_tensors="pt")

    def generate(self, text: str, images: list[Image.Image], max_new_tokens: int) -> list[int]:
        inputs = self.inputs(text, images)
        out = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
            do_sample=False,
        )  # fmt: skip
        return out[0, inputs["input_ids"].shape[1] :].tolist()

    def generate_ids(self, input_ids: list[int], max_new_tokens: int) -> list[int]:
        import torch

        out = self.model.generate(
            input_ids=torch.tensor([input_ids]), attention_mask=torch.ones(1, len(input_ids)),
            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
        )  # fmt: skip
        return out[0, len(input_ids) :].tolist()


def rewrite_as_legacy_sharded(src: Path, dst: Path) -> Path:
    """Copy a checkpoint with the older key layout (`language_model.model.*`,
    `vision_tower.vision_model.*`) split into two safetensors shards with an index."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = {}
    for path in sorted(dst.glob("*.safetensors")):
        tensors.update(load_file(path))
        path.unlink()
    renamed = {}
    for key, value in tensors.items():
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            key = "vision_tower.vision_model." + key[len("vision_tower.") :]
        renamed[key] = value.contiguous()
    keys = sorted(renamed)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: renamed[k] for k in shard_keys}, dst / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in shard_keys})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return dst


def boost_token_logit(src: Path, dst: Path, token_name: str, scale: float = 4.0) -> Path:
    """Copy a checkpoint, scaling one token's lm_head row so that greedy decoding often picks it."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    token_id = AutoTokenizer.from_pretrained(dst).convert_tokens_to_ids(token_name)
    (path,) = dst.glob("*.safetensors")
    tensors = load_file(path)
    head = next(k for k in tensors if k.endswith("lm_head.weight"))
    tensors[head][token_id] *= scale
    save_file(tensors, path, metadata={"format": "pt"})
    return dst
