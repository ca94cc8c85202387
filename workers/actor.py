"""WorkerActor: the Ray actor shell around a WorkerCore, with arrays in Ray's object store.

A threaded actor (`max_concurrency`), so that a blocking `poll` never stalls submits. The
WorkerCore is thread-safe and keeps the engine on its own thread. A restart (`max_restarts`)
re-runs `__init__`, which gives the worker a new, larger epoch: the scheduler sees it in the
next WorkerEvents and re-drives what the old incarnation held. `WorkerConfig.nice` lowers the
process's CPU priority (a restart is a new process, so it is applied once per incarnation).
"""

from __future__ import annotations

import os

import ray

from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob, WorkerEvents, WorkerLoad
from workers.contract.worker_config import WorkerConfig
from workers.object_store_transport import ObjectStoreTransport
from workers.worker import WorkerCore

MAX_CONCURRENCY = 16  # one blocking poll plus submits, aborts, releases and loads


class WorkerActor:
    def __init__(self, config: WorkerConfig, fetch_timeout_s: float = 30.0) -> None:
        # Engines are throughput work; the ingress, the control plane and Ray Serve's proxy are
        # on every request's path. Threads inherit the value, so set it before any start.
        if config.nice:
            os.nice(config.nice)
        self.core = WorkerCore(config, ObjectStoreTransport(fetch_timeout_s))

    def ready(self) -> tuple[str, int]:
        """(worker id, epoch) once the model is loaded."""
        return self.core.worker_id, self.core.epoch

    def submit_encode(self, job: EncodeJob) -> None:
        self.core.submit_encode(job)

    def submit_prefill(self, job: PrefillJob) -> None:
        self.core.submit_prefill(job)

    def submit_decode(self, job: DecodeJob) -> None:
        self.core.submit_decode(job)

    def poll(self, timeout_s: float) -> WorkerEvents:
        return self.core.poll(timeout_s)

    def abort(self, request_id: str) -> None:
        self.core.abort(request_id)

    def release(self, transfer_ids: list[str]) -> None:
        self.core.release(transfer_ids)

    def load(self) -> WorkerLoad:
        return self.core.load()

    def drain(self) -> None:
        self.core.drain()

    def is_idle(self) -> bool:
        return self.core.is_idle()


def start_worker_actor(
    config: WorkerConfig,
    *,
    num_cpus: float = 0,
    num_gpus: float = 0,
    max_restarts: int = 0,
    name: str | None = None,
    fetch_timeout_s: float = 30.0,
) -> ray.actor.ActorHandle:
    """Create the actor; it loads its model in the background (await `ready` to know when).
    `num_cpus=0` by default: engine threads share the node's cores, Ray need not reserve any."""
    actor_class = ray.remote(WorkerActor).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=MAX_CONCURRENCY,
        max_restarts=max_restarts, name=name,
    )  # fmt: skip
    return actor_class.remote(config, fetch_timeout_s)
