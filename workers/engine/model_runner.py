"""Runs one batch plan through the model: builds the flat input tensors and attention metadata,
runs the forward pass, and samples the requests that caught up (under their grammars' masks)."""

from __future__ import annotations

import numpy as np
import torch

from workers.engine.attention import AttentionMetadata, DecodeGroup, PrefillSegment
from workers.engine.batcher import BatchPlan, ScheduledRequest
from workers.engine.grammar import apply_grammar_masks
from workers.engine.kv_cache import KVCache, token_slots
from workers.engine.llava import LlavaModel
from workers.engine.sampler import sample


class ModelRunner:
    def __init__(self, model: LlavaModel, kv_cache: KVCache, device: torch.device) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.device = device
        self.block_size = kv_cache.block_size

    def run(self, plan: BatchPlan) -> dict[str, int]:
        """Returns the sampled token of every request whose last chunk ran this step."""
        if not plan.scheduled:
            return {}
        ids, positions, slots = [], [], []
        image_rows, image_values = [], []
        row = 0
        for item in plan.scheduled:
            req, start = item.request, item.request.num_computed_tokens
            pos = np.arange(start, start + item.num_new_tokens)
            ids.append(np.asarray(req.token_ids[start : start + item.num_new_tokens]))
            positions.append(pos)
            slots.append(token_slots(req.block_table, pos, self.block_size))
            for span_rows, embedding_rows in _image_overlap(item, row):
                image_rows.append(span_rows)
                image_values.append(req.image_embeddings[embedding_rows])
            row += item.num_new_tokens

        def to_device(parts: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.concatenate(parts)).to(self.device)

        meta = AttentionMetadata(
            slot_mapping=to_device(slots),
            prefills=self._prefill_segments(plan.scheduled),
            decodes=self._decode_group(plan.scheduled),
        )
        embeddings = to_device(image_values) if image_values else None
        rows = to_device(image_rows) if image_rows else torch.empty(0, dtype=torch.long)
        hidden = self.model(
            to_device(ids), to_device(positions), rows, embeddings, self.kv_cache.tensor, meta
        )

        last_rows, sampled = [], []
        row = 0
        for item in plan.scheduled:
            row += item.num_new_tokens
            if item.is_last_chunk:
                last_rows.append(row - 1)
                sampled.append(item.request)
        if not sampled:
            return {}
        logits = self.model.logits(hidden[torch.tensor(last_rows, device=self.device)])
        apply_grammar_masks(logits, [req.grammar for req in sampled])
        tokens = sample(
            logits,
            [req.sampling_params for req in sampled],
            [req.num_tokens - req.num_prompt_tokens for req in sampled],
        )
        return {req.request_id: tok for req, tok in zip(sampled, tokens, strict=True)}

    def _prefill_segments(self, scheduled: list[ScheduledRequest]) -> list[PrefillSegment]:
        segments, row = [], 0
        for item in scheduled:
            if item.num_new_tokens > 1:
                context = item.request.num_computed_tokens + item.num_new_tokens
                blocks = item.request.block_table[: -(-context // self.block_size)]
                table = torch.tensor(blocks, dtype=torch.long, device=self.device)
                segments.append(PrefillSegment(row, item.num_new_tokens, context, table))
            row += item.num_new_tokens
        return segments

    def _decode_group(self, scheduled: list[ScheduledRequest]) -> DecodeGroup | None:
        rows, tables, lengths = [], [], []
        row = 0
        for item in scheduled:
            if item.num_new_tokens == 1:
                rows.append(row)
                tables.append(item.request.block_table)
                lengths.append(item.request.num_computed_tokens + 1)
            row += item.num_new_tokens
        if not rows:
            return None
        max_blocks = max(len(table) for table in tables)
        block_tables = np.zeros((len(rows), max_blocks), dtype=np.int64)
        for i, table in enumerate(tables):
            block_tables[i, : len(table)] = table
        key_positions = np.arange(max_blocks * self.block_size)
        mask = key_positions[None, :] < np.asarray(lengths)[:, None]
        return DecodeGroup(
            token_index=torch.tensor(rows, device=self.device),
            block_tables=torch.from_numpy(block_tables).to(self.device),
            key_mask=torch.from_numpy(mask[:, None, None, :]).to(self.device),
        )


def _image_overlap(item: ScheduledRequest, first_row: int):
    """(batch rows, embedding rows) of the image placeholders this chunk computes.

    prompt:   ....[==== span ====]......
    chunk:           [start ........ end)
    overlap:         [=====]   -> embedding rows offset by (lo - span.offset)
    """
    req = item.request
    start = req.num_computed_tokens
    end = min(start + item.num_new_tokens, req.num_prompt_tokens)  # outputs are never images
    embedding_offset = 0
    for span in req.image_spans:
        lo, hi = max(start, span.offset), min(end, span.offset + span.length)
        if lo < hi:
            batch_rows = np.arange(lo, hi) - start + first_row
            embedding_rows = np.arange(lo, hi) - span.offset + embedding_offset
            yield batch_rows, embedding_rows
        embedding_offset += span.length
