"""vLLM backend fixtures: the `mini` checkpoint (the smallest vLLM's CPU attention runs), one
in-process vLLM engine for the module (vLLM keeps one KV connector per process), and Triserve's
engine on the same checkpoint as the reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.contract.engine_config import EngineConfig
from workers.engine.model_config import ModelConfig
from workers.engine.prompt import PromptBuilder

BLOCK_SIZE = 32  # vLLM's CPU attention takes multiples of 32


@pytest.fixture(scope="session")
def mini_model_dir() -> Path:
    from workers.engine.model_writer import ensure_model

    return ensure_model("mini")


def engine_config(model_dir: Path, stages: str, backend: str) -> EngineConfig:
    return EngineConfig(
        model_dir=str(model_dir), backend=backend, stages=stages, block_size=BLOCK_SIZE,
        kv_cache_memory_bytes=32 * 2**20,
    )  # fmt: skip


@pytest.fixture(scope="session")
def vllm_engine(mini_model_dir):
    """vLLM running every stage (EPD), so one engine exports and imports KV too."""
    from workers.vllm.engine import VllmEngine

    return VllmEngine(engine_config(mini_model_dir, "EPD", "vllm"))


@pytest.fixture(scope="session")
def native_engine(mini_model_dir):
    from workers.engine.engine import Engine

    return Engine(engine_config(mini_model_dir, "EPD", "native"))


@pytest.fixture(scope="session")
def prompts(mini_model_dir) -> PromptBuilder:
    return PromptBuilder(mini_model_dir, ModelConfig.from_pretrained(mini_model_dir))
