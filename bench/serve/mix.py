"""Workload kinds and the mix of them a run sends.

    kind          what a request carries                        class (scheduler's classifier)
    text          text only                                     sand
    image         text + one small image                        pebble
    ocr           one document image > rock_min_image_pixels    rock
    multi_image   rock_min_images.. images                      rock
    video         16+ frames, sent as a list of images          rock

The workload (workload.py) classes each request with the scheduler's own `classify`
(scheduler/request_class.py: a rock has at least rock_min_images images, or one image of at
least rock_min_image_pixels, or a prompt of at least rock_min_prompt_tokens tokens); the harness
computes attainment against the targets of that class, whatever class the server's trace
reports.
"""

from __future__ import annotations

from collections.abc import Mapping

KINDS = ("text", "image", "ocr", "multi_image", "video")
DEFAULT_MIX = {"text": 0.6, "image": 0.3, "ocr": 0.04, "multi_image": 0.03, "video": 0.03}


class MixError(ValueError):
    """A workload mix that cannot be used; the message says which item."""


def parse_mix(spec: str | Mapping[str, float]) -> dict[str, float]:
    """`text=0.6,image=0.3,video=0.1` (or a mapping) -> shares that sum to 1, in KINDS order.

    Shares are relative weights: they are normalised, so `text=3,image=1` is 75 / 25."""
    if isinstance(spec, str):
        items = {}
        for item in spec.split(","):
            name, sep, share = item.strip().partition("=")
            if not sep:
                raise MixError(f"mix item {item.strip()!r} is not KIND=SHARE")
            if name.strip() in items:
                raise MixError(f"mix names {name.strip()!r} twice")
            items[name.strip()] = share.strip()
    elif isinstance(spec, Mapping):
        items = dict(spec)
    else:
        raise MixError(f"a mix is KIND=SHARE,... or a mapping, got {spec!r}")
    weights = {}
    for name, share in items.items():
        if name not in KINDS:
            raise MixError(f"unknown workload kind {name!r}; kinds: {', '.join(KINDS)}")
        try:
            weight = float(share)
        except (TypeError, ValueError):
            raise MixError(f"share of {name!r} must be a number, got {share!r}") from None
        if not weight >= 0:  # also rejects NaN
            raise MixError(f"share of {name!r} must be >= 0, got {share!r}")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise MixError("the mix has no positive share")
    return {kind: weights[kind] / total for kind in KINDS if weights.get(kind, 0) > 0}


def format_mix(mix: Mapping[str, float]) -> str:
    return ",".join(f"{kind}={share:g}" for kind, share in mix.items())
