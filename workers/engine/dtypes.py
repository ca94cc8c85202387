"""The torch dtype of each `EngineConfig.dtype` name (the config itself stays torch-free)."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """ "float32", "bfloat16" or "float16" -> the torch dtype."""
    return DTYPES[name]
