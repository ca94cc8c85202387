"""Helpers for scheduler tests: a scheduler over fake workers, requests, and bounded waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from scheduler.config import SchedulerConfig
from scheduler.request import RequestOutput, RequestSpec
from scheduler.scheduler import Scheduler
from tests.scheduler.fake_transport import FakeTransport
from tests.scheduler.fake_worker import FakeWorker
from workers.contract.cost_profile import WorkerProfile
from workers.contract.messages import ImageInput
from workers.contract.sampling_params import SamplingParams

TEST_TIMEOUT_S = 5.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body, failing it instead of hanging past TEST_TIMEOUT_S."""

    async def bounded() -> None:
        await asyncio.wait_for(test(), TEST_TIMEOUT_S)

    asyncio.run(bounded())


def image(name: str) -> ImageInput:
    return ImageInput(image_hash=f"hash-{name}", data=name.encode())


def spec(
    request_id: str,
    prompt: Sequence[int] = (1, 2, 3),
    images: Sequence[ImageInput] = (),
    max_tokens: int = 4,
    model: str = "tiny",
) -> RequestSpec:
    params = SamplingParams(max_tokens=max_tokens, seed=0)
    return RequestSpec(request_id, model, list(prompt), list(images), params)


async def collect(outputs: AsyncIterator[RequestOutput]) -> list[RequestOutput]:
    return [output async for output in outputs]


SCHEDULING_EVENTS = ("classified", "dispatched", "encode_skipped", "slo")


def lifecycle_names(trace) -> list[str]:
    """The trace's event names without the scheduling ones (admission, dispatch, outcome)."""
    return [name for name in trace.names if name not in SCHEDULING_EVENTS]


def token_ids(outputs: Sequence[RequestOutput]) -> list[int]:
    return [token for output in outputs for token in output.token_ids]


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 2.0) -> None:
    """Poll `predicate` until it holds; fail after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.001)


@dataclass
class Cluster:
    scheduler: Scheduler
    workers: dict[str, FakeWorker]
    transport: FakeTransport

    def __getitem__(self, worker_id: str) -> FakeWorker:
        return self.workers[worker_id]

    async def generate(self, request: RequestSpec) -> list[RequestOutput]:
        return await collect(await self.scheduler.generate(request))


@asynccontextmanager
async def cluster(
    config: SchedulerConfig | None = None,
    clock: Callable[[], float] | None = None,
    profiles: dict[str, WorkerProfile] | None = None,
    **stages: str,
) -> AsyncIterator[Cluster]:
    """A scheduler over fake workers, e.g. `cluster(e="E", p="P", d="D")` (id="stages"), with
    the scheduler's `clock` and each worker's start-up profile when given."""
    transport = FakeTransport()
    profiles = profiles or {}
    workers = {
        worker_id: FakeWorker(worker_id, s, transport, profile=profiles.get(worker_id))
        for worker_id, s in stages.items()
    }
    scheduler = Scheduler(config=config, **({"clock": clock} if clock else {}))
    for worker in workers.values():
        await scheduler.add_worker(worker)
    try:
        yield Cluster(scheduler, workers, transport)
    finally:
        await scheduler.close()
