"""The random-weight checkpoints Triserve writes itself (workers/engine/model_writer.py), by name.
Plain Python (no torch), so that the command line can list them.

`tiny` loads in a second and is for tests; `mini` is the smallest that vLLM's CPU attention
accepts (head_dim 64; it refuses 16), for the vLLM backend's tests; `small` (about 100M
parameters, head_dim 64) is for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    vocab_size: int = 1024  # BPE training target; the config gets the trained size
    text_hidden: int = 64
    text_intermediate: int = 172
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    max_position_embeddings: int = 1024
    rope_parameters: dict = field(
        default_factory=lambda: {"rope_type": "default", "rope_theta": 1e4}
    )
    tie_word_embeddings: bool = False
    vision_hidden: int = 48
    vision_intermediate: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    image_size: int = 32
    patch_size: int = 8
    vision_hidden_act: str = "quick_gelu"
    vision_feature_layer: int | list[int] = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    initializer_range: float = 0.02
    seed: int = 0


PRESETS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(),
    "mini": ModelSpec(text_hidden=128, text_intermediate=344, text_heads=2, text_kv_heads=1),
    "small": ModelSpec(
        vocab_size=8192,
        text_hidden=768,
        text_intermediate=2048,
        text_layers=12,
        text_heads=12,
        text_kv_heads=4,
        max_position_embeddings=4096,
        vision_hidden=384,
        vision_intermediate=1536,
        vision_layers=6,
        vision_heads=6,
        image_size=224,
        patch_size=14,
    ),
}
