"""Request classes (sand, pebble, rock) and the SLO targets each gets by default."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.request import RequestSpec
from scheduler.request_class import (
    RequestClass,
    RequestCost,
    classify,
    estimate_cost,
    slo_targets,
)
from scheduler.slo import SloTargets
from workers.contract.messages import ImageInput

IMG = 99
CONFIG = SchedulerConfig()  # rock: >= 4 images, >= 2 000 000 pixels, >= 2048 prompt tokens


def image(name, num_pixels=640 * 480):
    return ImageInput(name, b"png", num_pixels)


def spec(prompt, images=(), **kwargs):
    return RequestSpec("r1", "tiny", list(prompt), list(images), **kwargs)


def test_cost_counts_image_tokens_in_the_prompt_and_the_largest_image():
    request = spec([1, IMG, IMG, IMG, 2, IMG, IMG, IMG, 3], [image("a", 100), image("b", 900)])

    assert estimate_cost(request, IMG) == RequestCost(
        num_images=2, num_image_tokens=6, num_prompt_tokens=9, max_image_pixels=900
    )


def test_image_tokens_are_unknown_without_the_placeholder_id():
    request = spec([1, IMG, IMG, 2], [image("a", 100)])

    assert estimate_cost(request, None) == RequestCost(1, 0, 4, 100)


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (RequestCost(0, 0, 2047, 0), RequestClass.SAND),
        (RequestCost(0, 0, 2048, 0), RequestClass.ROCK),
        (RequestCost(1, 576, 600, 1_999_999), RequestClass.PEBBLE),
        (RequestCost(3, 1728, 1800, 640 * 480), RequestClass.PEBBLE),
        (RequestCost(4, 2304, 2047, 640 * 480), RequestClass.ROCK),
        (RequestCost(1, 576, 600, 2_000_000), RequestClass.ROCK),
        (RequestCost(1, 576, 2048, 0), RequestClass.ROCK),
        (RequestCost(1, 0, 10, 0), RequestClass.PEBBLE),
    ],
)
def test_class_follows_the_documented_thresholds(cost, expected):
    assert classify(cost, CONFIG) == expected


def test_thresholds_come_from_the_config():
    config = SchedulerConfig(rock_min_images=2, rock_min_image_pixels=10, rock_min_prompt_tokens=8)

    assert classify(RequestCost(0, 0, 7, 0), config) is RequestClass.SAND
    assert classify(RequestCost(0, 0, 8, 0), config) is RequestClass.ROCK
    assert classify(RequestCost(1, 0, 5, 9), config) is RequestClass.PEBBLE
    assert classify(RequestCost(1, 0, 5, 10), config) is RequestClass.ROCK
    assert classify(RequestCost(2, 0, 5, 0), config) is RequestClass.ROCK


def test_request_without_targets_gets_its_class_defaults():
    config = SchedulerConfig(pebble_ttft_ms=2_500.0, pebble_tpot_ms=150.0)

    assert slo_targets(spec([1]), RequestClass.SAND, config) == SloTargets(1_000.0, 200.0)
    assert slo_targets(spec([1]), RequestClass.PEBBLE, config) == SloTargets(2_500.0, 150.0)
    assert slo_targets(spec([1]), RequestClass.ROCK, config) == SloTargets(15_000.0, 200.0)


def test_request_targets_override_each_class_default_separately():
    ttft_only = spec([1], slo_ttft_ms=50.0)
    tpot_only = spec([1], slo_tpot_ms=20.0)

    assert slo_targets(ttft_only, RequestClass.ROCK, CONFIG) == SloTargets(50.0, 200.0)
    assert slo_targets(tpot_only, RequestClass.ROCK, CONFIG) == SloTargets(15_000.0, 20.0)
