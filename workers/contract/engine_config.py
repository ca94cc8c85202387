"""Engine configuration: one frozen object per engine instance, part of a WorkerConfig. Plain
Python (no torch): the control plane builds it, the engine maps `dtype` to torch's
(workers/engine/dtypes.py)."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")
STAGES = ("E", "P", "D", "EP", "PD", "EPD")
BACKENDS = ("native", "vllm")  # Triserve's engine (workers/engine/), or vLLM's (workers/vllm/)


@dataclass(frozen=True)
class EngineConfig:
    model_dir: str
    backend: str = "native"  # see BACKENDS; vLLM runs P and D, its encode is Triserve's
    stages: str = "EPD"  # which of encode (E), prefill (P) and decode (D) this engine runs
    device: str = "cpu"  # "cpu" or "cuda[:N]"
    dtype: str = "float32"  # "float32", "bfloat16" or "float16"
    block_size: int = 16  # tokens per KV block
    num_kv_blocks: int | None = None  # None: as many as fit in kv_cache_memory_bytes
    kv_cache_memory_bytes: int = 256 * 2**20
    max_num_seqs: int = 64  # running requests per step
    max_num_batched_tokens: int = 512  # tokens per step; prefill is chunked under this budget
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    embedding_cache_size: int = 128  # images whose embeddings an encoder keeps (LRU)

    def __post_init__(self) -> None:
        if self.stages not in STAGES:
            raise ValueError(f"stages must be one of {STAGES}, got {self.stages!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.block_size < 1 or self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be >= 1")

    @property
    def has_encode(self) -> bool:
        return "E" in self.stages

    @property
    def has_language_model(self) -> bool:
        return "P" in self.stages or "D" in self.stages
