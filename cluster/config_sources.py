"""Where a ClusterConfig comes from: a YAML file (`load_config`), the `--pools` and
`--colocated` flags (`parse_pools`, `colocated_pools`), or both (`resolve_config`). The keys
and their meaning are in config.py."""

from __future__ import annotations

from pathlib import Path

from cluster.config import (
    STAGE_NAMES,
    ClusterConfig,
    ConfigError,
    PoolConfig,
    require,
)
from workers.contract.engine_config import STAGES


def load_config(path: str | Path) -> ClusterConfig:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e}") from None
    try:
        return ClusterConfig.from_dict(raw or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_pools(spec: str, model: str = "tiny") -> tuple[PoolConfig, ...]:
    """`encode=1,prefill=1,decode=1` or `ep=2,d=1`: comma-separated `stages=num_workers`, where
    stages is a stage name (encode, prefill, decode, colocated) or letters (e, p, d, ep, pd,
    epd). The pool is named after what was written, lower-cased."""
    pools = []
    for item in spec.split(","):
        name, sep, count = item.strip().partition("=")
        name = name.strip().lower()
        stages = STAGE_NAMES.get(name, "".join(s for s in "EPD" if s in name.upper()))
        is_letters = sorted(name.upper()) == sorted(stages) and len(set(name)) == len(name)
        require(
            bool(sep) and (name in STAGE_NAMES or is_letters) and stages in STAGES,
            f"--pools: {item.strip()!r} is not STAGES=N (STAGES: encode, prefill, decode, "
            f"colocated, or one of {', '.join(s.lower() for s in STAGES)})",
        )
        require(count.strip().isdigit(), f"--pools: {item.strip()!r}: N must be an integer >= 0")
        pools.append(PoolConfig(name=name, stages=stages, num_workers=int(count), model=model))
    names = [pool.name for pool in pools]
    require(len(set(names)) == len(names), f"--pools: {spec!r} names a pool twice")
    return tuple(pools)


def colocated_pools(num_workers: int, model: str = "tiny") -> tuple[PoolConfig, ...]:
    """`--colocated N`: one pool of N workers that each run encode, prefill and decode."""
    require(num_workers >= 1, f"--colocated: needs at least 1 worker, got {num_workers}")
    return (PoolConfig(name="colocated", stages="EPD", num_workers=num_workers, model=model),)


def resolve_config(
    path: str | Path | None = None, pools: str | None = None, colocated: int | None = None
) -> ClusterConfig:
    """A YAML file (or the defaults), with its pools replaced by `--pools` or `--colocated`."""
    require(pools is None or colocated is None, "use either --pools or --colocated, not both")
    config = load_config(path) if path else ClusterConfig()
    model = config.pools[0].model
    if pools is not None:
        return config.with_pools(parse_pools(pools, model))
    if colocated is not None:
        return config.with_pools(colocated_pools(colocated, model))
    return config
