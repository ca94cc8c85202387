"""Request classes (RPS-Serve): sand (text), pebbles (a few images), rocks (many images, high
resolution, video, very long prompts), from what a request will cost to encode and prefill.

    sand    no image
    pebble  1 .. rock_min_images - 1 images, none high-resolution, prompt below the rock length
    rock    >= rock_min_images images or frames, or an image of >= rock_min_image_pixels, or
            >= rock_min_prompt_tokens prompt tokens (image tokens included)

The class picks the request's default SLO targets and labels its trace and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from scheduler.config import SchedulerConfig
from scheduler.request import RequestSpec
from scheduler.slo import SloTargets


class RequestClass(Enum):
    SAND = "sand"
    PEBBLE = "pebble"
    ROCK = "rock"


@dataclass(frozen=True)
class RequestCost:
    """What a request will ask of each stage, before any cache is considered."""

    num_images: int
    num_image_tokens: int  # embedding rows its images become (encode and prefill work)
    num_prompt_tokens: int  # image tokens included
    max_image_pixels: int  # the largest image's width * height (decode and resize work)


def estimate_cost(spec: RequestSpec, image_token_id: int | None) -> RequestCost:
    """Image tokens are counted in the prompt, where the ingress expanded each placeholder into
    the image's embedding rows; without the placeholder id they are not known (0)."""
    prompt = spec.prompt_token_ids
    num_image_tokens = prompt.count(image_token_id) if image_token_id is not None else 0
    pixels = max((image.num_pixels for image in spec.images), default=0)
    return RequestCost(len(spec.images), num_image_tokens, len(prompt), pixels)


def classify(cost: RequestCost, config: SchedulerConfig) -> RequestClass:
    if cost.num_images == 0 and cost.num_prompt_tokens < config.rock_min_prompt_tokens:
        return RequestClass.SAND
    is_rock = (
        cost.num_images >= config.rock_min_images
        or cost.max_image_pixels >= config.rock_min_image_pixels
        or cost.num_prompt_tokens >= config.rock_min_prompt_tokens
    )
    return RequestClass.ROCK if is_rock else RequestClass.PEBBLE


def slo_targets(spec: RequestSpec, request_class: RequestClass, config: SchedulerConfig):
    """The request's own targets where it set them, its class's defaults elsewhere."""
    ttft_ms, tpot_ms = config.slo_for(request_class.value)
    return SloTargets(
        spec.slo_ttft_ms if spec.slo_ttft_ms is not None else ttft_ms,
        spec.slo_tpot_ms if spec.slo_tpot_ms is not None else tpot_ms,
    )
