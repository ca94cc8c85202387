"""WorkerActor: the Ray actor shell around a WorkerCore, with arrays in Ray's object store.

A threaded actor (`max_concurrency`), so that a blocking `poll` never stalls submits. The
WorkerCore is thread-safe and keeps the engine on its own thread. A restart (`max_restarts`)
re-runs `__init__`, which gives the worker a new, larger epoch: the scheduler sees it in the
next WorkerEvents and re-drives what the old incarnation held. `WorkerConfig.nice` lowers the
process's CPU priority (a restart is a new process, so it is applied once per incarnation).

Each worker is a detached actor named `triserve-<cluster id>-<worker id>`: it outlives the control
plane that launched it, so that a restarted control plane finds it again by that name
(`find_worker_actors`), and whoever stops the cluster kills it by name too (`kill_worker_actors`).
"""

from __future__ import annotations

import os
import re
import uuid

import ray

from workers.contract.messages import DecodeJob, EncodeJob, PrefillJob, WorkerEvents, WorkerLoad
from workers.contract.worker_config import WorkerConfig
from workers.object_store_transport import ObjectStoreTransport
from workers.worker import WorkerCore

MAX_CONCURRENCY = 16  # one blocking poll plus submits, aborts, releases and loads
_WORKER_NAME = re.compile(r"triserve-(?P<cluster_id>[0-9a-f]{8})-.+")  # -<worker id>


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

    def config(self) -> WorkerConfig:
        return self.core.config

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

    def abort_all(self) -> None:
        self.core.abort_all()

    def release(self, transfer_ids: list[str]) -> None:
        self.core.release(transfer_ids)

    def release_paused(self, request_ids: list[str]) -> None:
        self.core.release_paused(request_ids)

    def load(self) -> WorkerLoad:
        return self.core.load()

    def drain(self) -> None:
        self.core.drain()

    def is_idle(self) -> bool:
        return self.core.is_idle()

    def corrupt_next_transfers(self, num_transfers: int) -> None:
        """Fault injection for bench.faults: the next exports fail their consumer's checksum."""
        self.core.transport.corrupt_next(num_transfers)


def start_worker_actor(
    config: WorkerConfig,
    *,
    num_cpus: float = 0,
    num_gpus: float = 0,
    max_restarts: int = 0,
    cluster_id: str | None = None,
    fetch_timeout_s: float = 30.0,
) -> ray.actor.ActorHandle:
    """Create the actor; it loads its model in the background (await `ready` to know when).
    `num_cpus=0` by default: engine threads share the node's cores, Ray need not reserve any.
    With a `cluster_id` it is detached and named (see the module doc); without, it dies with
    its creator."""
    name = worker_actor_name(cluster_id, config.worker_id) if cluster_id else None
    actor_class = ray.remote(WorkerActor).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=MAX_CONCURRENCY,
        max_restarts=max_restarts, name=name, lifetime="detached" if name else None,
    )  # fmt: skip
    return actor_class.remote(config, fetch_timeout_s)


def new_cluster_id() -> str:
    """Made once per cluster by its launcher; it stays the same across control plane restarts."""
    return uuid.uuid4().hex[:8]


def worker_actor_name(cluster_id: str, worker_id: str) -> str:
    return f"triserve-{cluster_id}-{worker_id}"


def find_worker_actors(cluster_id: str | None = None) -> dict[str, ray.actor.ActorHandle]:
    """The live worker actors of a cluster (of every cluster when None), by actor name, from
    any namespace. It lists names only, so it works without the dashboard."""
    found = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        match = _WORKER_NAME.fullmatch(actor["name"])
        if match is None or cluster_id not in (None, match["cluster_id"]):
            continue
        try:
            found[actor["name"]] = ray.get_actor(actor["name"], actor["namespace"])
        except ValueError:  # died since the listing
            continue
    return found


def kill_worker_actors(cluster_id: str | None = None) -> list[str]:
    """Kill the worker actors of a cluster (of every cluster when None); returns their names.
    Detached actors outlive the control plane and the driver: a cluster's stop calls this."""
    found = find_worker_actors(cluster_id)
    for handle in found.values():
        ray.kill(handle, no_restart=True)
    return sorted(found)
