"""The memory-bandwidth floor of a decode step.

A decode step must read every weight of the language model that a token passes through, plus
the KV cache of every running sequence. At batch sizes where compute is cheap, that read sets a
lower bound on the step time:

    floor_s = (weight_bytes + kv_tokens * kv_bytes_per_token) / bandwidth

The bandwidth is measured in the same run on the same device, as a large tensor copy:
`dst.copy_(src)` reads and writes N bytes, so bandwidth = 2 * N / copy_time. The floor uses the
fastest copy, not the median: interference only ever slows a copy down, and a floor should be
what the memory can do.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from workers.engine.llava import LlavaModel

BANDWIDTH_DEFINITION = "2 * bytes / time of dst.copy_(src) on the device (read + write), fastest"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float  # fastest copy
    median_bytes_per_s: float
    copy_bytes: int  # size of the copied tensor
    num_repeats: int
    definition: str = BANDWIDTH_DEFINITION


def measure_copy_bandwidth(
    device: torch.device, copy_bytes: int | None = None, num_repeats: int = 20
) -> Bandwidth:
    """Read+write bandwidth of a copy far larger than any cache (256 MiB on CPU, 2 GiB on
    GPU: an H200's L2 is 60 MiB)."""
    if copy_bytes is None:
        copy_bytes = 2 * 2**30 if device.type == "cuda" else 256 * 2**20
    src = torch.ones(copy_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults and allocator work are not bandwidth
    synchronize(device)
    times = []
    for _ in range(num_repeats):
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        times.append(time.perf_counter() - start)
    del src, dst
    return Bandwidth(
        bytes_per_s=2 * copy_bytes / min(times),
        median_bytes_per_s=2 * copy_bytes / statistics.median(times),
        copy_bytes=copy_bytes,
        num_repeats=num_repeats,
    )


@dataclass(frozen=True)
class DecodeBytes:
    """What one decode step has to read, for one model at one dtype."""

    weight_bytes: int  # decoder layers + final norm + lm_head (see decode_bytes)
    embedding_bytes: int  # the input embedding table: not counted, a step gathers one row
    kv_bytes_per_token: int  # all layers, key and value

    def step_bytes(self, kv_tokens: int) -> int:
        return self.weight_bytes + kv_tokens * self.kv_bytes_per_token


def decode_bytes(model: LlavaModel) -> DecodeBytes:
    """Count the language model's bytes from the loaded parameters, so dtype and tying are real.
    With tied embeddings the lm_head reads the whole table, so it counts once, as the lm_head."""
    language_model = model.language_model
    embedding = language_model.embed_tokens.weight
    layer_bytes = sum(
        p.numel() * p.element_size()
        for name, p in language_model.named_parameters()
        if name != "embed_tokens.weight"
    )
    lm_head = model.lm_head.weight
    text = model.config.text
    kv_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim
    return DecodeBytes(
        weight_bytes=layer_bytes + lm_head.numel() * lm_head.element_size(),
        embedding_bytes=embedding.numel() * embedding.element_size(),
        kv_bytes_per_token=kv_per_token * embedding.element_size(),
    )


def floor_report(
    measured_s: float, kv_tokens: float, step: DecodeBytes, bandwidth: Bandwidth
) -> dict:
    """Measured step time next to its bandwidth floor, for a step over `kv_tokens` of KV."""
    num_bytes = step.step_bytes(round(kv_tokens))
    floor_s = num_bytes / bandwidth.bytes_per_s
    return {
        "measured_ms_per_step": measured_s * 1e3,
        "floor_ms_per_step": floor_s * 1e3,
        "bytes_per_step": num_bytes,
        "kv_tokens": kv_tokens,
        "measured_over_floor": measured_s / floor_s,
    }


def bandwidth_report(bandwidth: Bandwidth) -> dict:
    return {
        **asdict(bandwidth),
        "gb_per_s": bandwidth.bytes_per_s / 1e9,
        "median_gb_per_s": bandwidth.median_bytes_per_s / 1e9,
    }
