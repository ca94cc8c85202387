"""Load Hugging Face LLaVA safetensors into `LlavaModel`, whatever the checkpoint's key layout.

Three layouts are in the wild:
  transformers 4.52+ in memory   model.language_model.*  model.vision_tower.vision_model.* lm_head.*
  older checkpoints (the Hub)    language_model.model.*  vision_tower.vision_model.*
                                 language_model.lm_head.*
  transformers 5 on disk         language_model.model.*  vision_tower.* (no vision_model level)
One table of renames, applied in order, maps all of them onto our module names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from workers.engine.llama import rope_inverse_frequencies
from workers.engine.llava import LlavaModel
from workers.engine.model_config import ModelConfig

KEY_RENAMES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^model\.language_model\.", "language_model."),
        (r"^language_model\.model\.", "language_model."),
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model."),
    )
)
MODEL_PARTS = ("language_model.", "lm_head.", "vision_tower.", "multi_modal_projector.")
# Buffers that some checkpoints store and that we recompute.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")


def map_checkpoint_key(key: str) -> str | None:
    """Our parameter name for a checkpoint key, or None for keys we do not load."""
    if key.endswith(IGNORED_SUFFIXES):
        return None
    for pattern, replacement in KEY_RENAMES:
        key = pattern.sub(replacement, key, count=1)
    if not key.startswith(MODEL_PARTS):
        raise ValueError(f"unexpected weight {key!r} in checkpoint")
    return key


def safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / name for name in shards]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {model_dir}")
    return files


def iter_checkpoint(model_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    for path in safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield key, f.get_tensor(key)


def load_weights(model: LlavaModel, model_dir: str | Path) -> None:
    """Copy every checkpoint tensor that belongs to a part this model has; fail on gaps."""
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    for key, tensor in iter_checkpoint(Path(model_dir)):
        name = map_checkpoint_key(key)
        if name is None or name not in params:
            if name is not None and _part_is_present(model, name):
                raise ValueError(f"checkpoint weight {key!r} has no place in the model ({name})")
            continue
        param = params[name]
        if param.shape != tensor.shape:
            raise ValueError(
                f"{key}: checkpoint shape {tuple(tensor.shape)} != {tuple(param.shape)}"
            )
        with torch.no_grad():
            param.copy_(tensor.to(param.dtype))
        loaded.add(name)
    if model.lm_head is not None and model.config.text.tie_word_embeddings:
        model.tie_lm_head()  # tied checkpoints store only embed_tokens
        loaded.add("lm_head.weight")
    missing = sorted(set(params) - loaded)
    if missing:
        raise ValueError(f"checkpoint {model_dir} lacks {len(missing)} weights, e.g. {missing[:3]}")


def _part_is_present(model: LlavaModel, name: str) -> bool:
    part = name.split(".", 1)[0]
    return getattr(model, part, None) is not None


def load_model(
    model_dir: str | Path,
    config: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    has_vision: bool = True,
    has_language: bool = True,
) -> LlavaModel:
    """Build the requested parts straight on `device` in `dtype` (no random init) and load them."""
    with torch.device("meta"):
        model = LlavaModel(config, has_vision=has_vision, has_language=has_language)
    model = model.to_empty(device=device).to(dtype)
    load_weights(model, model_dir)
    if model.language_model is not None:  # a computed buffer: keep it exact, in fp32
        rotary = model.language_model.rotary_emb
        rotary.inv_freq = rope_inverse_frequencies(config.text).to(device)
    return model.eval()
