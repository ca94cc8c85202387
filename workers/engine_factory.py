"""The one place that names an engine class: a worker's engine, built from its config.

The engine's modules (and torch) load here, when a worker starts, not when the contract or the
worker's shells are imported: the control plane imports the actor class to start actors, and
must not load torch."""

from __future__ import annotations

from workers.contract.worker_config import WorkerConfig
from workers.engine_interface import EngineInterface


def build_engine(config: WorkerConfig) -> EngineInterface:
    """Load the engine of `config.engine`, after setting the process's torch threads
    (`config.torch_threads`; None: torch's default): vLLM's (workers/vllm/) for backend "vllm"
    with prefill or decode stages, else Triserve's (workers/engine/); an encode-only worker
    runs Triserve's encoder on either backend."""
    import torch

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if config.engine.backend == "vllm" and config.engine.has_language_model:
        from workers.vllm.engine import VllmEngine

        return VllmEngine(config.engine)
    from workers.engine.engine import Engine

    return Engine(config.engine)
