"""Write random-weight LLaVA checkpoints in Hugging Face format (config, safetensors, tokenizer,
image processor and processor configs), so that tests and the embedded default need no download.
The presets (`tiny`, `small`) are in model_presets.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from workers.engine.model_presets import PRESETS, ModelSpec
from workers.engine.tokenizer_trainer import train_tokenizer

FORMAT_VERSION = 2  # bump when a preset or the tokenizer (chat template) changes: caches rebuild


def write_checkpoint(model_dir: str | Path, spec: ModelSpec | str = "tiny") -> Path:
    """Write a complete checkpoint into `model_dir` (created; must not hold one already)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    try:  # the pillow backend needs no torchvision (which has no CPU-only wheel)
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    spec = PRESETS[spec] if isinstance(spec, str) else spec
    model_dir = Path(model_dir)
    tokenizer = train_tokenizer(spec.vocab_size)
    config = LlavaConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": dict(spec.rope_parameters),
            "tie_word_embeddings": spec.tie_word_embeddings,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "initializer_range": spec.initializer_range,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "hidden_act": spec.vision_hidden_act,
            "projection_dim": spec.vision_hidden,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        projector_hidden_act=spec.projector_hidden_act,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    model.save_pretrained(model_dir)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(model_dir)
    return model_dir


def cache_dir() -> Path:
    return Path(os.environ.get("TRISERVE_CACHE", Path.home() / ".cache" / "triserve"))


def ensure_model(preset: str = "tiny") -> Path:
    """The preset's checkpoint in the cache folder, written once (atomically) if missing."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    target = cache_dir() / "models" / f"{preset}-v{FORMAT_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=target.parent))
    try:
        write_checkpoint(staging / "model", preset)
        try:
            os.rename(staging / "model", target)
        except OSError:  # another process won the race
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def variant(base: str = "tiny", **changes) -> ModelSpec:
    return replace(PRESETS[base], **changes)
