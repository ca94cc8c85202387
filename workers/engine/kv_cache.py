"""Device storage for the paged KV cache, and its export to / import from numpy.

    tensor: [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]
                         \\__ key, value

A request's tokens live in the slots `block_table[p // block_size] * block_size + p % block_size`.
Export gathers those slots into one contiguous `[num_layers, 2, num_tokens, kv_heads, head_dim]`
array (one copy on the device, one device-to-host copy on GPU, none more); import scatters it back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workers.contract.errors import InvalidRequestError
from workers.engine_messages import PromptKV


def token_slots(block_table: Sequence[int], positions: np.ndarray, block_size: int) -> np.ndarray:
    """Cache slot of each token position, given the request's block table."""
    blocks = np.asarray(block_table, dtype=np.int64)[positions // block_size]
    return blocks * block_size + positions % block_size


class KVCache:
    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim)
        self.tensor = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size

    @staticmethod
    def bytes_per_block(num_layers, block_size, num_kv_heads, head_dim, dtype) -> int:
        return num_layers * 2 * block_size * num_kv_heads * head_dim * dtype.itemsize

    def _slot_view(self) -> torch.Tensor:
        num_layers, _, num_blocks, block_size, heads, dim = self.tensor.shape
        return self.tensor.view(num_layers, 2, num_blocks * block_size, heads, dim)

    def _slots(self, block_table: Sequence[int], num_tokens: int) -> torch.Tensor:
        slots = token_slots(block_table, np.arange(num_tokens), self.block_size)
        return torch.from_numpy(slots).to(self.tensor.device)

    def export(self, block_table: Sequence[int], num_tokens: int) -> PromptKV:
        kv = self._slot_view().index_select(2, self._slots(block_table, num_tokens))
        dtype = str(self.tensor.dtype).removeprefix("torch.")
        if self.tensor.dtype == torch.bfloat16:
            kv = kv.view(torch.int16)
        array = kv.cpu().numpy()
        if self.tensor.dtype == torch.bfloat16:
            array = array.view(np.uint16)
        return PromptKV(kv=array, dtype=dtype)

    def load(self, block_table: Sequence[int], prompt_kv: PromptKV) -> None:
        expected = (*self.tensor.shape[:2], prompt_kv.num_tokens, *self.tensor.shape[4:])
        if prompt_kv.kv.shape != expected:
            raise InvalidRequestError(f"KV shape {prompt_kv.kv.shape} does not fit {expected}")
        values = torch.from_numpy(np.ascontiguousarray(prompt_kv.kv))
        if prompt_kv.dtype == "bfloat16":
            values = values.view(torch.int16).view(torch.bfloat16)
        values = values.to(device=self.tensor.device, dtype=self.tensor.dtype)
        self._slot_view()[:, :, self._slots(block_table, prompt_kv.num_tokens)] = values
