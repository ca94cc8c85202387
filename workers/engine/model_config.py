"""The fields of a Hugging Face LLaVA checkpoint's config that change the engine's output.

transformers parses `config.json` (and fills in its defaults); we copy what we use into frozen
dataclasses so that the model code never touches a transformers object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUPPORTED_TEXT_MODELS = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_act: str
    rms_norm_eps: float
    max_position_embeddings: int
    rope_parameters: dict  # rope_type, rope_theta and the type's own fields
    attention_bias: bool  # on q/k/v
    o_proj_bias: bool  # Llama's attention_bias covers o_proj too; Qwen2 has none there
    mlp_bias: bool
    tie_word_embeddings: bool


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int
    hidden_act: str
    layer_norm_eps: float

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class ModelConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_index: int
    vision_feature_layers: tuple[int, ...]  # indices into the vision tower's hidden states
    vision_feature_select_strategy: str  # "default" drops CLS, "full" keeps it
    projector_hidden_act: str
    projector_bias: bool

    @property
    def num_image_tokens(self) -> int:
        """Embedding rows (= placeholder tokens) per image."""
        drop_cls = self.vision_feature_select_strategy == "default"
        return self.vision.num_patches + (0 if drop_cls else 1)

    @property
    def num_vision_layers_needed(self) -> int:
        """Encoder layers to run: later layers cannot change the selected features."""
        n = self.vision.num_hidden_layers
        return max(layer % (n + 1) for layer in self.vision_feature_layers)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> ModelConfig:
        # Imported when a checkpoint is read, not with this module: transformers loads torch,
        # and the ingress (which imports this module) must not until it loads a model.
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(str(model_dir))
        if hf.model_type != "llava":
            raise ValueError(f"{model_dir}: model_type {hf.model_type!r} is not 'llava'")
        text, vision = hf.text_config, hf.vision_config
        if text.model_type not in SUPPORTED_TEXT_MODELS:
            raise ValueError(
                f"text model {text.model_type!r} is not one of {SUPPORTED_TEXT_MODELS}"
            )
        if vision.model_type != "clip_vision_model":
            raise ValueError(f"vision tower {vision.model_type!r} is not a CLIP vision model")
        rope = dict(getattr(text, "rope_parameters", None) or {})
        rope.setdefault("rope_type", "default")
        rope.setdefault("rope_theta", getattr(text, "rope_theta", 10000.0))
        if rope["rope_type"] not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope type {rope['rope_type']!r} is not one of {SUPPORTED_ROPE_TYPES}"
            )
        if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
            if text.model_type == "mistral":
                raise ValueError("sliding-window attention is not supported")
        strategy = hf.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise ValueError(f"unknown vision_feature_select_strategy {strategy!r}")
        layers = hf.vision_feature_layer
        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        num_heads = text.num_attention_heads
        return cls(
            text=TextConfig(
                vocab_size=text.vocab_size,
                hidden_size=text.hidden_size,
                intermediate_size=text.intermediate_size,
                num_hidden_layers=text.num_hidden_layers,
                num_attention_heads=num_heads,
                num_key_value_heads=getattr(text, "num_key_value_heads", None) or num_heads,
                head_dim=getattr(text, "head_dim", None) or text.hidden_size // num_heads,
                hidden_act=text.hidden_act,
                rms_norm_eps=text.rms_norm_eps,
                max_position_embeddings=text.max_position_embeddings,
                rope_parameters=rope,
                attention_bias=text.model_type == "qwen2" or getattr(text, "attention_bias", False),
                o_proj_bias=text.model_type != "qwen2" and getattr(text, "attention_bias", False),
                mlp_bias=getattr(text, "mlp_bias", False),
                tie_word_embeddings=bool(
                    getattr(hf, "tie_word_embeddings", False)
                    or getattr(text, "tie_word_embeddings", False)
                ),
            ),
            vision=VisionConfig(
                hidden_size=vision.hidden_size,
                intermediate_size=vision.intermediate_size,
                num_hidden_layers=vision.num_hidden_layers,
                num_attention_heads=vision.num_attention_heads,
                image_size=vision.image_size,
                patch_size=vision.patch_size,
                num_channels=vision.num_channels,
                hidden_act=vision.hidden_act,
                layer_norm_eps=vision.layer_norm_eps,
            ),
            image_token_index=hf.image_token_index
            if hasattr(hf, "image_token_index")
            else hf.image_token_id,
            vision_feature_layers=layers,
            vision_feature_select_strategy=strategy,
            projector_hidden_act=hf.projector_hidden_act,
            projector_bias=getattr(hf, "multimodal_projector_bias", True),
        )
