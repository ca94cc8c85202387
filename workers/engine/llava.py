"""LLaVA: CLIP vision tower -> projector -> Llama-family decoder.

A worker builds only the parts its stages need: an encode-only worker has no language model, and
a decode-only worker has no vision tower or projector.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.engine.activations import get_activation
from workers.engine.attention import AttentionMetadata
from workers.engine.clip import CLIPVisionModel
from workers.engine.llama import LlamaModel
from workers.engine.model_config import ModelConfig


class LlavaMultiModalProjector(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        in_dim = config.vision.hidden_size * len(config.vision_feature_layers)
        out_dim, bias = config.text.hidden_size, config.projector_bias
        self.linear_1 = nn.Linear(in_dim, out_dim, bias=bias)
        self.act = get_activation(config.projector_hidden_act)
        self.linear_2 = nn.Linear(out_dim, out_dim, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class LlavaModel(nn.Module):
    def __init__(self, config: ModelConfig, has_vision: bool = True, has_language: bool = True):
        super().__init__()
        if not (has_vision or has_language):
            raise ValueError("a model needs a vision tower, a language model, or both")
        self.config = config
        self.vision_tower = CLIPVisionModel(config.vision) if has_vision else None
        self.multi_modal_projector = LlavaMultiModalProjector(config) if has_vision else None
        self.language_model = LlamaModel(config.text) if has_language else None
        self.lm_head = None
        if has_language:
            self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)

    def tie_lm_head(self) -> None:
        self.lm_head.weight = self.language_model.embed_tokens.weight

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [images, 3, H, W] -> embeddings [images, image_tokens, text_hidden]."""
        cfg = self.config
        states = self.vision_tower.vision_model.hidden_states(
            pixel_values, cfg.num_vision_layers_needed
        )
        num_states = cfg.vision.num_hidden_layers + 1
        selected = [states[layer % num_states] for layer in cfg.vision_feature_layers]
        if cfg.vision_feature_select_strategy == "default":
            selected = [s[:, 1:] for s in selected]
        return self.multi_modal_projector(torch.cat(selected, dim=-1))

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        image_rows: torch.Tensor,
        image_embeddings: torch.Tensor | None,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """input_ids, positions [T]; image_rows [num_image_slots] rows of the batch that take
        `image_embeddings` [num_image_slots, hidden] instead of a token embedding.
        Returns the final hidden states [T, hidden]."""
        embeds = self.language_model.embed_tokens(input_ids)
        if image_embeddings is not None and image_rows.numel():
            embeds[image_rows] = image_embeddings.to(embeds.dtype)
        return self.language_model(embeds, positions, kv_cache, meta)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> fp32 logits [N, vocab]."""
        return self.lm_head(hidden).float()
