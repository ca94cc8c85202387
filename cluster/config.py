"""Cluster configuration: the models, the worker pools, and how clients reach the cluster.

Read from YAML, or from command-line pool specs (config_sources.py: `load_config`,
`parse_pools`, `colocated_pools`, and `resolve_config`, which combines them). Every key is
optional; unknown keys and bad values raise `ConfigError` naming the key.
`deploy/cluster.example.yaml` shows a whole file.

    models:                 # model name -> checkpoint directory, or a preset Triserve writes
      tiny: tiny            #   itself ("tiny", "mini", "small"). Default: {tiny: tiny}
    pools:                  # default: encode (E), prefill (P) and decode (D), 1 worker each
      - name: encode        # (required) unique pool name
        stages: E           # (required) E, P, D, EP, PD or EPD; the pools together need P and D
        engine: native      # native (Triserve's engine) or vllm (vLLM's, in the worker process;
                            #   on CPU it needs block_size a multiple of 32 and head_dim >= 32)
        num_workers: 1      # workers started with the cluster (>= 0); `scale` changes it later
        model: tiny         # a key of `models`; default: the only model
        num_gpus: 0         # GPUs Ray reserves per worker (fractions allowed)
        num_cpus: 0         # CPUs Ray reserves per worker; 0 lets workers share the cores
        device: cpu         # "cpu" or "cuda"
        dtype: float32      # float32, bfloat16 or float16
        num_kv_blocks: null            # KV blocks per worker; null: as kv_cache_memory_bytes fit
        kv_cache_memory_bytes: 268435456
        block_size: 16                 # tokens per KV block
        max_num_seqs: 64               # running requests per engine step
        max_num_batched_tokens: 512    # tokens per engine step (prefill is chunked under it)
        max_model_len: null            # null: the model's max_position_embeddings
        enable_prefix_caching: true
        embedding_cache_size: 128      # images whose embeddings a worker keeps (LRU)
        torch_threads: null            # torch threads per worker process; null: torch's default
        nice: 10                       # added to the worker processes' nice value (0-19), so
                                       # that the ingress, the control plane and Serve's proxy,
                                       # on every request's path, get shared cores first
        max_restarts: 3                # restarts of a crashed worker actor; -1: unlimited
        profile_at_start: true         # measure encode/prefill/decode times at start-up
                                       # (CPU: 0.2 s tiny, a few s small) and size each engine
                                       # step to the strictest scheduler.*_tpot_ms
    host: 127.0.0.1         # address the ingress listens on
    port: 50051             # gRPC port (0: any free port)
    http_port: 8000         # OpenAI-compatible HTTP API (0: any free port; null: no HTTP API)
    api_token: null         # bearer token clients send (gRPC, HTTP); "env:NAME" reads $NAME
    admin_token: null       # token for admin calls (ScalePool); "env:NAME" too
    ray_address: null       # Ray cluster to join ("auto", "ray://host:10001"); null: start one
    fetch_timeout_s: 30     # how long a worker waits for a transfer before failing it
    call_timeout_s: 30      # how long the scheduler waits for a worker to answer a call
    metrics_port: 9464      # Prometheus metrics at http://host:port/metrics (0: any free
                            # port; null: off)
    scheduler:              # every key of scheduler/config.py's SchedulerConfig, e.g.
      policy: slo           #   slo (slack-ordered queues, admission, affinity) or fcfs
      admission: reject     #   reject, degrade or best_effort, for requests that set none
      sand_ttft_ms: 1000    #   class SLO defaults: {sand,pebble,rock}_{ttft,tpot}_ms
      rock_min_images: 4    #   class thresholds: rock_min_{images,image_pixels,prompt_tokens}
    limits:                 # per request, checked at the ingress (cluster/limits.py); a request
                            # over one gets INVALID_ARGUMENT naming the limit and its value
      max_request_bytes: 16777216  # the serialized GenerateRequest, checked before parsing it
      max_request_id_chars: 256
      max_prompt_chars: 1048576    # raw text, or all chat roles and texts, before tokenising
      max_prompt_tokens: null      # after tokenising; null: the model's context length - 1
      max_tokens: null             # the largest sampling.max_tokens; null: the context length
      max_images: 64               # images per request
      max_image_bytes: 8388608     # one encoded image
      max_image_pixels: 16777216   # width x height, read from the header before decoding
      max_ongoing_calls: 256       # calls one ingress replica holds (open streams included);
      max_queued_calls: 64         # beyond both, Serve's proxy refuses: RESOURCE_EXHAUSTED
    responses: {path: null, max_age_s: 604800, max_count: 100000}  # /v1/responses' store
    agent: {}               # the agent controller: MCP servers, tool tiers, budgets, routing
                            # (agent/config.py documents its keys)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from cluster.config_checks import ConfigError, check_keys, mapping, require, secret, typed
from cluster.limits import LimitsConfig
from cluster.openai.response_store import ResponsesConfig
from scheduler.config import SchedulerConfig
from workers.contract.engine_config import BACKENDS, DTYPES, STAGES, EngineConfig
from workers.contract.worker_config import WorkerConfig

PRESETS = ("tiny", "mini", "small")
STAGE_NAMES = {"encode": "E", "prefill": "P", "decode": "D", "colocated": "EPD"}


@dataclass(frozen=True)
class PoolConfig:
    name: str
    stages: str
    num_workers: int = 1
    model: str = "tiny"
    engine: str = "native"
    num_gpus: float = 0.0
    num_cpus: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    num_kv_blocks: int | None = None
    kv_cache_memory_bytes: int = 256 * 2**20
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    embedding_cache_size: int = 128
    torch_threads: int | None = None
    nice: int = 10
    max_restarts: int = 3
    profile_at_start: bool = True

    def __post_init__(self) -> None:
        where = f"pool {self.name!r}"
        require(bool(self.name), f"{where}: name must not be empty")
        require(self.stages in STAGES, f"{where}: stages must be one of {STAGES}")
        require(self.dtype in DTYPES, f"{where}: dtype must be one of {DTYPES}")
        require(self.engine in BACKENDS, f"{where}: engine must be one of {BACKENDS}")
        runs_vllm_on_cpu = self.engine == "vllm" and self.device.startswith("cpu")
        require(
            not runs_vllm_on_cpu or self.stages == "E" or self.block_size % 32 == 0,
            f"{where}: vLLM's CPU attention needs block_size a multiple of 32 (set block_size: 32)",
        )
        require(self.device.startswith(("cpu", "cuda")), f"{where}: device must be cpu or cuda")
        require(self.num_workers >= 0, f"{where}: num_workers must be >= 0")
        require(self.num_gpus >= 0 and self.num_cpus >= 0, f"{where}: num_gpus/num_cpus < 0")
        require(self.max_restarts >= -1, f"{where}: max_restarts must be >= -1")
        require(0 <= self.nice <= 19, f"{where}: nice must be in 0..19")
        for key in (
            "num_kv_blocks",
            "block_size",
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_model_len",
            "torch_threads",
            "kv_cache_memory_bytes",
        ):
            value = getattr(self, key)
            require(value is None or value >= 1, f"{where}: {key} must be >= 1")

    def on_engine(self, engine: str) -> PoolConfig:
        """This pool on `engine`; vLLM's CPU attention takes blocks of 32, not the default 16."""
        needs_wider = engine == "vllm" and self.device.startswith("cpu") and self.block_size == 16
        return replace(self, engine=engine, block_size=32 if needs_wider else self.block_size)

    def engine_config(self, model_dir: str | Path) -> EngineConfig:
        """The EngineConfig of each worker of this pool."""
        return EngineConfig(
            model_dir=str(model_dir),
            backend=self.engine,
            stages=self.stages,
            device=self.device,
            dtype=self.dtype,
            block_size=self.block_size,
            num_kv_blocks=self.num_kv_blocks,
            kv_cache_memory_bytes=self.kv_cache_memory_bytes,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
            embedding_cache_size=self.embedding_cache_size,
        )

    def worker_config(
        self, worker_id: str, model_dir: str | Path, tpot_target_ms: float | None = None
    ) -> WorkerConfig:
        """`tpot_target_ms`: what a profiling worker derives its step budgets from."""
        return WorkerConfig(
            worker_id=worker_id,
            engine=self.engine_config(model_dir),
            pool=self.name,
            model=self.model,
            torch_threads=self.torch_threads,
            nice=self.nice,
            profile_at_start=self.profile_at_start,
            tpot_target_ms=tpot_target_ms,
        )


def default_pools(model: str = "tiny") -> tuple[PoolConfig, ...]:
    """One pool per stage: the smallest disaggregated layout."""
    return tuple(
        PoolConfig(name=name, stages=STAGE_NAMES[name], num_workers=1, model=model)
        for name in ("encode", "prefill", "decode")
    )


@dataclass(frozen=True)
class ClusterConfig:
    models: dict[str, str] = field(default_factory=lambda: {"tiny": "tiny"})
    pools: tuple[PoolConfig, ...] = field(default_factory=default_pools)
    host: str = "127.0.0.1"
    port: int = 50051
    http_port: int | None = 8000
    api_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    ray_address: str | None = None
    fetch_timeout_s: float = 30.0
    call_timeout_s: float = 30.0
    metrics_port: int | None = 9464
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        require(bool(self.models), "models: at least one model is needed")
        require(bool(self.pools), "pools: at least one pool is needed")
        names = [pool.name for pool in self.pools]
        require(len(set(names)) == len(names), f"pools: names must be unique, got {names}")
        for pool in self.pools:
            require(pool.model in self.models, f"pool {pool.name!r}: unknown model {pool.model!r}")
        stages = "".join(pool.stages for pool in self.pools)
        require("P" in stages and "D" in stages, "pools: no pool runs prefill (P) or decode (D)")
        require(0 <= self.port <= 65535, "port must be in [0, 65535]")
        for key in ("http_port", "metrics_port"):
            port = getattr(self, key)
            require(port is None or 0 <= port <= 65535, f"{key} must be in [0, 65535] or null")
        require(self.fetch_timeout_s > 0 and self.call_timeout_s > 0, "timeouts must be > 0")

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(f"no pool named {name!r}; pools: {[p.name for p in self.pools]}")

    def model_dir(self, model: str) -> Path:
        """The model's checkpoint directory; a preset is written on first use (imports torch)."""
        source = self.models[model]
        if source in PRESETS:
            from workers.engine.model_writer import ensure_model

            return ensure_model(source)
        return Path(source).expanduser()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ClusterConfig:
        raw = mapping(raw, "the configuration")
        check_keys(raw, cls, "the configuration")
        sections = dict(scheduler=SchedulerConfig, limits=LimitsConfig, responses=ResponsesConfig)
        skipped = {"pools", "agent", *sections}
        values = {k: typed(cls, k, v, k) for k, v in raw.items() if k not in skipped}
        for key in sections.keys() & raw.keys():
            values[key] = _section_from_dict(raw[key], sections[key], key)
        if "agent" in raw:
            try:
                values["agent"] = AgentConfig.from_dict(mapping(raw["agent"] or {}, "agent"))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        for key in ("api_token", "admin_token"):
            values[key] = secret(values.get(key), key)
        models = values.setdefault("models", {"tiny": "tiny"})
        for name, source in mapping(models, "models").items():
            require(isinstance(source, str) and source, f"models.{name}: must be a path/preset")
        if "pools" in raw:
            require(isinstance(raw["pools"], list), "pools: must be a list of pools")
            default_model = next(iter(models)) if len(models) == 1 else None
            values["pools"] = tuple(
                _pool_from_dict(item, f"pools[{i}]", default_model)
                for i, item in enumerate(raw["pools"])
            )
        elif len(models) == 1:
            values["pools"] = default_pools(next(iter(models)))
        return cls(**values)

    def with_pools(self, pools: tuple[PoolConfig, ...]) -> ClusterConfig:
        return replace(self, pools=tuple(pools))


# --------------------------------------------------------------------- sections
def _pool_from_dict(raw: Any, where: str, default_model: str | None) -> PoolConfig:
    raw = mapping(raw, where)
    check_keys(raw, PoolConfig, where)
    for key in ("name", "stages"):
        require(key in raw, f"{where}: {key} is required")
    values = {k: typed(PoolConfig, k, v, f"{where}.{k}") for k, v in raw.items()}
    if "model" not in values:
        require(default_model is not None, f"{where}: model is required with several models")
        values["model"] = default_model
    values["stages"] = values["stages"].upper()
    try:
        return PoolConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _section_from_dict(raw: Any, cls: type, where: str) -> Any:
    """A nested section (`scheduler`, `limits`): its dataclass, from a mapping of its keys."""
    raw = mapping(raw, where)
    check_keys(raw, cls, where)
    values = {k: typed(cls, k, v, f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from None
