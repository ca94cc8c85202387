"""Write random-weight LLaVA checkpoints in Hugging Face format (config, safetensors, tokenizer,
image processor and processor configs), so that tests and the embedded default need no download.
The presets (`tiny`, `mini`, `small`) are in model_presets.py.

The weights are saved in the key layout of the Hub's LLaVA checkpoints (llava-hf/llava-1.5-*):
`language_model.model.*`, `language_model.lm_head.*`, `vision_tower.vision_model.*`,
`multi_modal_projector.*`. transformers, vLLM and Triserve all load it; transformers 5's own
on-disk layout (`vision_tower.*` with no `vision_model` level) vLLM does not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from workers.engine.model_presets import PRESETS, ModelSpec
from workers.engine.tokenizer_trainer import train_tokenizer

FORMAT_VERSION = 3  # bump when a preset or the tokenizer (chat template) changes: caches rebuild


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
    _to_hub_layout(model_dir)
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


HUB_KEY_PREFIXES = (  # transformers 5 on disk -> the Hub's layout; first match wins
    ("language_model.lm_head.", "language_model.lm_head."),
    ("lm_head.", "language_model.lm_head."),
    ("language_model.model.", "language_model.model."),
    ("language_model.", "language_model.model."),
    ("vision_tower.vision_model.", "vision_tower.vision_model."),
    ("vision_tower.", "vision_tower.vision_model."),
    ("multi_modal_projector.", "multi_modal_projector."),
)


def hub_key(key: str) -> str:
    """A checkpoint key as the Hub's LLaVA checkpoints name it."""
    key = key.removeprefix("model.")
    for prefix, hub_prefix in HUB_KEY_PREFIXES:
        if key.startswith(prefix):
            return hub_prefix + key[len(prefix) :]
    raise ValueError(f"unexpected weight {key!r}")


def _to_hub_layout(model_dir: Path) -> None:
    """Rename the keys of every safetensors file in `model_dir` (and its index) to hub_key's."""
    for path in model_dir.glob("*.safetensors"):
        tensors = load_file(path)
        save_file({hub_key(k): v for k, v in tensors.items()}, path, metadata={"format": "pt"})
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {hub_key(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))


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
