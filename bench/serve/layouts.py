"""The deployments compared side by side: the same number of worker processes, the same torch
threads per worker, the same model; only the pools and the scheduling policy differ.

    colocated-fcfs   one pool of N EPD workers, first come first served (the baseline)
    disagg-fcfs      encode / prefill / decode pools (default 1 / 1 / 1), first come first served
    disagg-slo       the same pools, the SLO-aware scheduler (slack-ordered queues, admission)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cluster.config import ClusterConfig, PoolConfig
from cluster.config_sources import colocated_pools, parse_pools
from scheduler.config import SchedulerConfig

DEFAULT_DISAGG_POOLS = "encode=1,prefill=1,decode=1"


@dataclass(frozen=True)
class Layout:
    name: str
    policy: str  # SchedulerConfig.policy
    disaggregated: bool  # False: one pool of EPD workers

    def pools(self, num_workers: int, disagg_pools: str, model: str) -> tuple[PoolConfig, ...]:
        if self.disaggregated:
            return parse_pools(disagg_pools, model)
        return colocated_pools(num_workers, model)


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout(name="colocated-fcfs", policy="fcfs", disaggregated=False),
        Layout(name="disagg-fcfs", policy="fcfs", disaggregated=True),
        Layout(name="disagg-slo", policy="slo", disaggregated=True),
    )
}


def parse_layouts(spec: str) -> tuple[Layout, ...]:
    """`colocated-fcfs,disagg-slo` -> the layouts, in the order given."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in LAYOUTS]
    if unknown or not names:
        raise ValueError(f"unknown layout(s) {unknown or spec!r}; layouts: {', '.join(LAYOUTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--layouts {spec!r} names a layout twice")
    return tuple(LAYOUTS[name] for name in names)


@dataclass(frozen=True)
class DeploymentSpec:
    """What every layout of a run shares."""

    preset: str  # model preset: tiny, mini or small
    engine: str = "native"  # every pool's engine: native or vllm
    num_workers: int = 3
    disagg_pools: str = DEFAULT_DISAGG_POOLS
    torch_threads: int = 1
    device: str = "cpu"  # cuda: every worker gets 1 / num_workers of GPU 0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)  # policy: per layout

    def check(self) -> None:
        num_disagg = sum(pool.num_workers for pool in parse_pools(self.disagg_pools))
        if num_disagg != self.num_workers:
            raise ValueError(
                f"--disagg-pools {self.disagg_pools!r} has {num_disagg} workers, --workers is "
                f"{self.num_workers}: every layout must have the same number of workers"
            )


def cluster_config(layout: Layout, deployment: DeploymentSpec) -> ClusterConfig:
    """The ClusterConfig of one layout (gRPC on a free port)."""
    pools = layout.pools(deployment.num_workers, deployment.disagg_pools, deployment.preset)
    num_gpus = 1.0 / deployment.num_workers if deployment.device == "cuda" else 0.0
    pools = tuple(
        replace(
            pool,
            torch_threads=deployment.torch_threads,
            device=deployment.device,
            num_gpus=num_gpus,
        ).on_engine(deployment.engine)
        for pool in pools
    )
    return ClusterConfig(
        models={deployment.preset: deployment.preset},
        pools=pools,
        port=0,
        http_port=0,  # any free port: 8000 may be a `triserve serve` nearby
        metrics_port=None,  # off: a fixed port would clash with a `triserve serve` nearby
        scheduler=replace(deployment.scheduler, policy=layout.policy),
    )
