"""LocalWorkerClient: a WorkerCore in this process behind the scheduler's async WorkerClient
(workers/contract/worker_client.py), for tests and single-process runs without Ray. Blocking
calls run in threads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob, WorkerEvents, WorkerLoad
from workers.contract.worker_config import WorkerConfig
from workers.transport import Transport
from workers.worker import WorkerCore


class LocalWorkerClient:
    def __init__(self, core: WorkerCore) -> None:
        self.core = core
        self.worker_id, self.stages = core.worker_id, core.stages
        self.pool, self.model = core.pool, core.model
        # Its own thread for the blocking poll, so that many local workers polling at once
        # do not exhaust asyncio's shared default executor.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"poll-{core.worker_id}")

    @classmethod
    async def start(cls, config: WorkerConfig, transport: Transport) -> LocalWorkerClient:
        """Build the worker (loading the model) without blocking the event loop."""
        return cls(await asyncio.to_thread(WorkerCore, config, transport))

    @property
    def epoch(self) -> int:
        return self.core.epoch

    async def submit_encode(self, job: EncodeJob) -> None:
        self.core.submit_encode(job)

    async def submit_prefill(self, job: PrefillJob) -> None:
        self.core.submit_prefill(job)

    async def submit_decode(self, job: DecodeJob) -> None:
        self.core.submit_decode(job)

    async def poll(self, timeout_s: float) -> WorkerEvents:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.core.poll, timeout_s)

    async def abort(self, request_id: str) -> None:
        self.core.abort(request_id)

    async def release(self, transfer_ids: list[str]) -> None:
        self.core.release(transfer_ids)

    async def release_paused(self, request_ids: list[str]) -> None:
        self.core.release_paused(list(request_ids))

    async def load(self) -> WorkerLoad:
        return self.core.load()

    # ----------------------------------------------------------------- pool management
    async def drain(self) -> None:
        self.core.drain()

    async def is_idle(self) -> bool:
        return self.core.is_idle()

    async def stop(self) -> None:
        await asyncio.to_thread(self.core.close)
        self._executor.shutdown(wait=False)
