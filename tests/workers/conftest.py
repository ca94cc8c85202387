"""Fixtures for worker tests: in-process workers on the tiny model sharing one transport."""

from __future__ import annotations

import pytest

from tests.workers.support import ImageRequest, image_request
from workers.contract.engine_config import EngineConfig
from workers.contract.worker_config import WorkerConfig
from workers.transport import InProcessTransport
from workers.worker import WorkerCore


@pytest.fixture
def transport() -> InProcessTransport:
    return InProcessTransport()


@pytest.fixture
def start_worker(tiny_model_dir, transport):
    """start_worker(worker_id, stages, **engine_options) -> a running WorkerCore (32 KV blocks
    unless the options say otherwise)."""
    started: list[WorkerCore] = []

    def start(worker_id: str, stages: str, **engine_options) -> WorkerCore:
        options = {"num_kv_blocks": 32, **engine_options}
        engine = EngineConfig(model_dir=str(tiny_model_dir), stages=stages, **options)
        started.append(WorkerCore(WorkerConfig(worker_id=worker_id, engine=engine), transport))
        return started[-1]

    yield start
    for worker in started:
        worker.close()


@pytest.fixture(scope="session")
def cat_request(tiny_model_dir) -> ImageRequest:
    return image_request(tiny_model_dir)
