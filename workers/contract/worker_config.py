"""WorkerConfig: what one worker is started with. Plain Python (no torch): the control plane
builds it (cluster/config.py) and hands it to the worker's actor."""

from __future__ import annotations

from dataclasses import dataclass

from workers.contract.engine_config import EngineConfig


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    engine: EngineConfig
    pool: str = ""  # the pool this worker belongs to
    model: str = ""  # the model's name in the cluster config
    torch_threads: int | None = None  # torch intra-op threads (process-wide); None: default
    # Added to the nice value of the process hosting the worker (the Ray actor shell applies
    # it before the engine's threads start; an in-process worker ignores it).
    nice: int = 0
    num_fetch_threads: int = 2  # fetch and verify the arrays of this many jobs at once
    # Measure encode, prefill and decode times before taking jobs (a second or a few): the
    # scheduler's cost model starts from them, and they set the step budgets. False: budgets
    # from the engine config, and `load().profile` is None.
    profile_at_start: bool = False
    # The TPOT the step budgets keep a turn within (profile_at_start only); None: the config's
    # token budget and whole encode jobs per turn, whatever they cost.
    tpot_target_ms: float | None = None

    @property
    def stages(self) -> str:
        return self.engine.stages
