"""Per-token K and V rows in vLLM's CPU attention cache, for the KV connector (kv_connector.py).

One layer's cache is `[num_blocks, num_kv_heads, block_size, 2 * head_dim]`; vLLM's kernels view it
as `[num_blocks, num_kv_heads, 2, block_size * head_dim]`: each (block, head) holds its keys, then
its values. Values are stored row per token (`[block_size, head_dim]`); keys transposed
(`[head_dim, block_size]`), so that attention reads them along the token axis. Keys are stored
after the rotary embedding, as in Triserve's engine, so rows move between the engines as they are.

The key layout is the fp32 "vec" kernels' (head_dim and block_size multiples of 32); `check_layout`
round-trips rows through vLLM's own cache-write kernel and refuses any other layout at start-up
rather than move wrong KV later.
"""

from __future__ import annotations

import torch


def _views(kv_layer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys [blocks, heads, head_dim, block_size], values [blocks, heads, block_size, head_dim]."""
    num_blocks, num_heads, block_size, twice_head_dim = kv_layer.shape
    head_dim = twice_head_dim // 2
    halves = kv_layer.view(num_blocks, num_heads, 2, block_size * head_dim)
    keys = halves[:, :, 0].view(num_blocks, num_heads, head_dim, block_size)
    values = halves[:, :, 1].view(num_blocks, num_heads, block_size, head_dim)
    return keys, values


def read_rows(kv_layer: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of the tokens in `slots` (block * block_size + offset): two [tokens, heads, dim]."""
    keys, values = _views(kv_layer)
    block_size = kv_layer.shape[2]
    blocks, offsets = slots // block_size, slots % block_size
    return keys[blocks, :, :, offsets], values[blocks, :, offsets, :]


def write_rows(
    kv_layer: torch.Tensor, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> None:
    """Store K and V rows ([tokens, heads, dim] each) at `slots`."""
    keys, values = _views(kv_layer)
    block_size = kv_layer.shape[2]
    blocks, offsets = slots // block_size, slots % block_size
    keys[blocks, :, :, offsets] = k.to(kv_layer.dtype)
    values[blocks, :, offsets, :] = v.to(kv_layer.dtype)


def check_layout(dtype: torch.dtype, block_size: int, num_kv_heads: int, head_dim: int) -> None:
    """Raise RuntimeError unless read_rows reads back what vLLM's kernel wrote, on a scratch cache
    of this engine's shape."""
    from vllm import _custom_ops as ops
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    isa = _get_attn_isa(dtype, block_size, head_dim)
    cache = torch.zeros(2, num_kv_heads, block_size, 2 * head_dim, dtype=dtype)
    num_tokens = block_size + 3
    generator = torch.Generator().manual_seed(0)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=generator).to(dtype)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=generator).to(dtype)
    slots = torch.arange(num_tokens, dtype=torch.int64)
    halves = cache.view(2, num_kv_heads, 2 * block_size, head_dim).chunk(2, dim=2)
    ops.cpu_attn_reshape_and_cache(k, v, halves[0], halves[1], slots, isa)
    read_k, read_v = read_rows(cache, slots)
    if not (torch.equal(read_k, k) and torch.equal(read_v, v)):
        raise RuntimeError(
            f"vLLM's CPU KV cache layout for {dtype}, block_size {block_size}, head_dim "
            f"{head_dim} (kernel isa {isa!r}) is not the one Triserve's KV connector reads"
        )
