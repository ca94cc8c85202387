"""Attention over a paged KV cache, in plain torch (runs on CPU and GPU).

One step's tokens are flattened into `[num_tokens, ...]`. Each request contributes a run of
`query_len` new tokens whose keys live in cache slots:

    slot = block_table[position // block_size] * block_size + position % block_size

The new keys and values are written first; then each request attends over its whole context.
Requests with one new token (decodes) are attended together in one padded batch; requests
with several (prefill chunks) one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefillSegment:
    token_start: int  # first row of this request in the flattened batch
    query_len: int
    context_len: int  # tokens of KV this request attends to, the new ones included
    block_table: torch.Tensor  # [ceil(context_len / block_size)] blocks holding that context


@dataclass
class DecodeGroup:
    token_index: torch.Tensor  # [batch] row of each request's single new token
    block_tables: torch.Tensor  # [batch, max_blocks], padded with block 0
    key_mask: torch.Tensor  # [batch, 1, 1, max_blocks * block_size], True where a real key is


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot that each new token's KV is written to
    prefills: list[PrefillSegment]
    decodes: DecodeGroup | None


def paged_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """query [T, heads, head_dim]; key/value [T, kv_heads, head_dim];
    key_cache/value_cache [num_blocks, block_size, kv_heads, head_dim] (written in place).
    Returns [T, heads, head_dim]."""
    num_kv_heads, head_dim = key.shape[1], key.shape[2]
    key_cache.view(-1, num_kv_heads, head_dim)[meta.slot_mapping] = key
    value_cache.view(-1, num_kv_heads, head_dim)[meta.slot_mapping] = value

    out = torch.empty_like(query)
    for seg in meta.prefills:
        rows = slice(seg.token_start, seg.token_start + seg.query_len)
        q = query[rows].transpose(0, 1).unsqueeze(0)  # [1, heads, q, d]
        if seg.context_len == seg.query_len:  # no earlier context: use the fresh keys directly
            k, v, mask, causal = key[rows], value[rows], None, True
        else:
            k = _gather_blocks(key_cache, seg.block_table)[: seg.context_len]
            v = _gather_blocks(value_cache, seg.block_table)[: seg.context_len]
            first_pos = seg.context_len - seg.query_len
            q_pos = torch.arange(first_pos, seg.context_len, device=query.device)
            k_pos = torch.arange(seg.context_len, device=query.device)
            mask, causal = k_pos[None, :] <= q_pos[:, None], False
        k = k.transpose(0, 1).unsqueeze(0)
        v = v.transpose(0, 1).unsqueeze(0)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=True
        )
        out[rows] = o.squeeze(0).transpose(0, 1)

    group = meta.decodes
    if group is not None:
        batch = group.block_tables.shape[0]
        q = query[group.token_index].unsqueeze(2)  # [batch, heads, 1, d]
        k = _gather_blocks(key_cache, group.block_tables.flatten()).view(batch, -1, *key.shape[1:])
        v = _gather_blocks(value_cache, group.block_tables.flatten()).view(
            batch, -1, *key.shape[1:]
        )
        o = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=group.key_mask, scale=scale,
            enable_gqa=True,
        )  # fmt: skip
        out[group.token_index] = o.squeeze(2)
    return out


def _gather_blocks(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """Whole blocks, in order, as [len(block_ids) * block_size, kv_heads, head_dim]: copying
    blocks is several times faster than gathering token slots one by one."""
    return cache.index_select(0, block_ids).flatten(0, 1)
