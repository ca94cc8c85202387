"""RayWorkerClient: the scheduler's async WorkerClient (workers/contract/worker_client.py) over a
WorkerActor handle (actor.py).

Every call is an actor method whose ref is awaited with a deadline. A dead or restarting actor
raises `WorkerUnavailableError` (a ConnectionError) and a missed deadline `TimeoutError`, so
the scheduler, which must not import Ray, can catch both with builtins. Ray tells the two
apart: a restarting actor raises `ActorUnavailableError` (the scheduler suspects the worker
and polls it until it is back), one with no restarts left `ActorDiedError`, which sets
`is_gone`: the pool manager then replaces the worker without waiting out the suspicion.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob, WorkerEvents, WorkerLoad
from workers.contract.worker_config import WorkerConfig


class WorkerUnavailableError(ConnectionError):
    """The worker's actor died or is restarting; its in-flight requests need re-driving."""


class RayWorkerClient:
    def __init__(
        self, handle: ray.actor.ActorHandle, config: WorkerConfig, call_timeout_s: float = 30.0
    ) -> None:
        self.handle = handle
        self.worker_id, self.stages = config.worker_id, config.stages
        self.pool, self.model = config.pool, config.model
        self.call_timeout_s = call_timeout_s
        self.is_gone = False  # Ray said the actor is dead for good

    async def submit_encode(self, job: EncodeJob) -> None:
        await self._call("submit_encode", job)

    async def submit_prefill(self, job: PrefillJob) -> None:
        await self._call("submit_prefill", job)

    async def submit_decode(self, job: DecodeJob) -> None:
        await self._call("submit_decode", job)

    async def poll(self, timeout_s: float) -> WorkerEvents:
        return await self._call("poll", timeout_s, timeout_s=timeout_s + self.call_timeout_s)

    async def abort(self, request_id: str) -> None:
        await self._call("abort", request_id)

    async def release(self, transfer_ids: list[str]) -> None:
        await self._call("release", list(transfer_ids))

    async def release_paused(self, request_ids: list[str]) -> None:
        await self._call("release_paused", list(request_ids))

    async def load(self) -> WorkerLoad:
        return await self._call("load")

    # ----------------------------------------------------------------- pool management
    async def ready(self, timeout_s: float) -> int:
        """Wait until the model is loaded; returns the worker's epoch."""
        _, epoch = await self._call("ready", timeout_s=timeout_s)
        return epoch

    async def drain(self) -> None:
        await self._call("drain")

    async def abort_all(self) -> None:
        await self._call("abort_all")

    async def is_idle(self) -> bool:
        return await self._call("is_idle")

    async def stop(self) -> None:
        ray.kill(self.handle, no_restart=True)

    async def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        ref = getattr(self.handle, method).remote(*args)
        timeout_s = self.call_timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
        except ray.exceptions.ActorDiedError as e:
            self.is_gone = True
            raise WorkerUnavailableError(f"worker {self.worker_id} is dead: {e}") from e
        except ray.exceptions.RayActorError as e:
            raise WorkerUnavailableError(f"worker {self.worker_id} is unavailable: {e}") from e
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"worker {self.worker_id} did not answer {method} within {timeout_s:.1f} s"
            ) from None
