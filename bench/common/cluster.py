"""Clusters a benchmark starts and stops itself, one after another on this machine.

The control plane's actor name and the Serve application name are fixed, so a cluster must be
gone, its control plane included, before the next one starts. Ray is imported inside the
functions, when they run.
"""

from __future__ import annotations

import os
import time

from cluster import launcher
from cluster.config import ClusterConfig
from cluster.launcher import RunningCluster

STOP_TIMEOUT_S = 30.0


def init_ray(object_store_mb: int) -> bool:
    """Start a private local Ray (as cluster/launcher does) unless one is up; True if started.
    Clusters started after it join it, so several share one Ray session."""
    import ray

    from cluster.launcher import set_local_ray_defaults
    from cluster.names import NAMESPACE

    if ray.is_initialized():
        return False
    set_local_ray_defaults()
    ray.init(
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=object_store_mb * 2**20,
    )
    return True


def private_cluster_config(preset: str, pools: str) -> ClusterConfig:
    """One preset served by `pools` (e.g. "encode=1,prefill=1,decode=1"), gRPC on a free port,
    no metrics endpoint; a private local Ray (when none is up) needs no auth token."""
    import ray

    from cluster.config_sources import parse_pools

    if not ray.is_initialized():
        os.environ["RAY_AUTH_MODE"] = "disabled"
    pools_config = parse_pools(pools, preset)
    return ClusterConfig(
        models={preset: preset}, pools=pools_config, port=0, http_port=0, metrics_port=None
    )


def start_cluster(config: ClusterConfig) -> RunningCluster:
    """`cluster.launcher.start_cluster`; when it fails, whatever it had started is removed (so
    the next cluster can start) and the error raised."""
    try:
        return launcher.start_cluster(config)
    except Exception:
        clean_up()
        raise


def stop_cluster(cluster: RunningCluster) -> list[str]:
    """Stop the cluster and wait until its control plane is gone; what went wrong, if anything
    (the names are freed either way, as far as they can be)."""
    problems = []
    try:
        cluster.stop()
    except Exception as e:  # e.g. the control plane did not answer its shutdown call
        problems.append(f"stopping the cluster failed: {e!r}")
        clean_up()
    if not wait_control_plane_gone():
        problems.append(f"the control plane did not go away in {STOP_TIMEOUT_S:.0f} s")
    return problems


def wait_control_plane_gone(timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Until no actor holds the control plane's name (`RunningCluster.stop` kills it without
    waiting for its death); False when one still does after `timeout_s`."""
    import ray

    from cluster.names import CONTROL_PLANE_NAME, NAMESPACE

    if not ray.is_initialized():  # the cluster's stop shut down the Ray it had started
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get_actor(CONTROL_PLANE_NAME, namespace=NAMESPACE)
        except ValueError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def clean_up() -> None:
    """Remove the Serve application, the control plane and the worker actors (detached: they
    outlive the control plane) a failed start or stop left."""
    import ray
    from ray import serve

    from cluster.names import CONTROL_PLANE_NAME, NAMESPACE
    from workers.actor import kill_worker_actors

    if not ray.is_initialized():  # the failed start shut down the Ray it had started
        return
    try:
        serve.shutdown()
    except Exception:  # nothing to shut down
        pass
    try:
        ray.kill(ray.get_actor(CONTROL_PLANE_NAME, namespace=NAMESPACE))
    except ValueError:
        pass
    kill_worker_actors()  # of every cluster: one at a time runs here
    wait_control_plane_gone()
