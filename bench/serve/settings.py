"""Every knob of a serving benchmark run, in one frozen dataclass. The CLI, a YAML/JSON file
(`--config`) and `--quick` all produce values for these fields; `from_values` converts and checks
them, whichever of the three they came from (a rate list may be "1,2" or [1, 2])."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.serve.api_streams import APIS
from bench.serve.arrivals import PROCESSES
from bench.serve.layouts import DEFAULT_DISAGG_POOLS, LAYOUTS, parse_layouts
from bench.serve.mix import DEFAULT_MIX, parse_mix
from scheduler.config import SchedulerConfig

# --quick: the baseline and the SLO layout, one short point and a short overload point.
QUICK = {
    "layouts": ("colocated-fcfs", "disagg-slo"),
    "rates": (4.0,),
    "duration_s": 6.0,
    "overload_duration_s": 3.0,
    "output_tokens": (8, 32),
    "drain_timeout_s": 30.0,
}


@dataclass(frozen=True)
class BenchSettings:
    # ---- deployment (the same for every layout)
    preset: str = "tiny"  # model preset: tiny (16 image tokens), mini or small (256)
    engine: str = "native"  # every pool's engine: native or vllm (needs preset mini or small)
    layouts: tuple[str, ...] = tuple(LAYOUTS)
    workers: int = 3  # worker processes per layout
    disagg_pools: str = DEFAULT_DISAGG_POOLS  # the disaggregated layouts' pools (sum = workers)
    torch_threads: int = 1  # per worker
    device: str = "cpu"
    object_store_mb: int = 512  # Ray's object store, when the benchmark starts Ray
    scheduler: dict = field(default_factory=dict)  # SchedulerConfig fields, e.g. sand_ttft_ms
    # ---- load
    # The tiny preset on 2 CPU cores (engines niced, PoolConfig.nice) saturates between 20 and
    # 32 req/s.
    rates: tuple[float, ...] = (8.0, 12.0, 16.0, 20.0, 24.0)  # req/s, one point each
    duration_s: float = 15.0  # per point: rate x duration requests ...
    num_requests: int | None = None  # ... unless this fixes the count per point
    arrival: str = "poisson"  # poisson, gamma or trace
    burstiness: float = 1.0  # gamma: coefficient of variation of the gaps (1 = Poisson)
    trace: str | None = None  # a Mooncake .jsonl or Azure .csv file (arrival "trace")
    trace_format: str | None = None  # mooncake or azure; default: from the extension
    time_scale: float | None = None  # trace: replay its own times x this (else: per rate)
    max_requests: int | None = None  # trace: its first N requests
    # ---- requests
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    prompt_tokens: tuple[int, int] = (16, 256)
    output_tokens: tuple[int, int] = (16, 128)
    multi_images: tuple[int, int] = (4, 8)
    video_frames: tuple[int, int] = (16, 24)
    reuse_fraction: float = 0.1
    prompt_format: str = "raw"  # raw or chat
    # Request i of a point goes over apis[i % len(apis)], so that the APIs share its load and
    # caches and compare side by side (HTTP needs chat prompts).
    apis: tuple[str, ...] = ("grpc",)
    ttft_ms: float | None = None  # sent with every request; default: the class targets
    tpot_ms: float | None = None
    # ---- overload point
    overload: bool = True
    overload_factor: float = 3.0
    base_rate: float | None = None  # default: the highest of `rates`
    overload_duration_s: float | None = None  # default: half of duration_s
    # ---- running
    warmup: bool = True  # one untimed request per kind before each layout's first point
    request_timeout_s: float = 300.0
    drain_timeout_s: float = 60.0  # after a point's last send
    seed: int = 0
    out: str | None = None  # default: bench/results/serve_<preset>_<cpu|gpu>[_quick]
    quick: bool = False

    @property
    def overload_rate(self) -> float | None:
        if not self.overload or self.overload_factor <= 0 or self.arrival == "trace":
            return None
        return self.overload_factor * (self.base_rate or max(self.rates))

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        device = "gpu" if self.device == "cuda" else "cpu"
        suffix = ("_vllm" if self.engine == "vllm" else "") + ("_quick" if self.quick else "")
        return (
            Path(__file__).resolve().parents[1]
            / "results"
            / f"serve_{self.preset}_{device}{suffix}"
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _floats(value: Any) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(float(item) for item in items if str(item).strip())


def _range(value: Any) -> tuple[int, int]:
    """ "16-256", "16,256", [16, 256] or a single 64 (fixed)."""
    if isinstance(value, (int, float)):
        items = [value, value]
    elif isinstance(value, str):
        items = value.replace("-", ",").split(",")
    else:
        items = list(value)
    low, high = (int(item) for item in (items * 2 if len(items) == 1 else items))
    if not 1 <= low <= high:
        raise ValueError(f"a range must be LOW-HIGH with 1 <= LOW <= HIGH, got {value!r}")
    return low, high


def _apis(value: Any) -> tuple[str, ...]:
    apis = tuple(a.strip() for a in (value.split(",") if isinstance(value, str) else value))
    if not apis or any(a not in APIS for a in apis) or len(set(apis)) < len(apis):
        raise ValueError(f"apis: a list of distinct APIs out of {list(APIS)}, got {value!r}")
    return apis


def _names(value: Any) -> tuple[str, ...]:
    return tuple(layout.name for layout in parse_layouts(value if isinstance(value, str)
                                                         else ",".join(value)))  # fmt: skip


CONVERTERS = {
    "layouts": _names, "rates": _floats, "mix": parse_mix, "prompt_tokens": _range,
    "output_tokens": _range, "multi_images": _range, "video_frames": _range, "apis": _apis,
}  # fmt: skip
CHOICES = {
    "preset": ("tiny", "mini", "small"), "engine": ("native", "vllm"), "device": ("cpu", "cuda"),
    "arrival": PROCESSES,
    "prompt_format": ("raw", "chat"), "trace_format": (None, "mooncake", "azure"),
}  # fmt: skip


def from_values(values: Mapping[str, Any]) -> BenchSettings:
    """Settings from field values (names may use dashes); --quick's values under the rest."""
    values = {key.replace("-", "_"): value for key, value in values.items()}
    known = {f.name: f for f in dataclasses.fields(BenchSettings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    if values.get("quick"):
        values = {**QUICK, **values}
    converted = {}
    for name, value in values.items():
        if value is None:
            converted[name] = None
        elif name in CONVERTERS:
            converted[name] = CONVERTERS[name](value)
        elif name == "scheduler":
            if not isinstance(value, Mapping):
                raise ValueError("scheduler: must be a mapping of SchedulerConfig fields")
            converted[name] = dict(value)
        else:
            converted[name] = _scalar(known[name], value)
    settings = BenchSettings(**converted)
    check(settings)
    return settings


def _scalar(spec: dataclasses.Field, value: Any) -> Any:
    kind = str(spec.type)
    if "bool" in kind:
        if not isinstance(value, bool):
            raise ValueError(f"{spec.name}: expected true or false, got {value!r}")
        return value
    for name, cast in (("float", float), ("int", int), ("str", str)):
        if kind.startswith(name):
            try:
                return cast(value)
            except (TypeError, ValueError):
                raise ValueError(f"{spec.name}: expected {name}, got {value!r}") from None
    return value


def check(s: BenchSettings) -> None:
    for name, allowed in CHOICES.items():
        if getattr(s, name) not in allowed:
            raise ValueError(f"{name}: must be one of {[a for a in allowed if a]}")
    positive = {
        name: getattr(s, name)
        for name in (
            "workers",
            "torch_threads",
            "duration_s",
            "request_timeout_s",
            "object_store_mb",
        )
    }
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name}: must be > 0, got {value}")
    if not s.rates or min(s.rates) <= 0:
        raise ValueError(f"rates: need at least one rate, all > 0, got {s.rates}")
    if s.arrival == "trace" and not s.trace:
        raise ValueError("arrival trace: --trace FILE is needed")
    if s.trace and s.arrival != "trace":
        raise ValueError("--trace is given: use --arrival trace")
    if s.burstiness <= 0 or not 0 <= s.reuse_fraction <= 1 or s.drain_timeout_s < 0:
        raise ValueError("burstiness must be > 0, reuse_fraction in [0, 1], drain_timeout_s >= 0")
    for name in ("num_requests", "max_requests"):
        if getattr(s, name) is not None and getattr(s, name) < 1:
            raise ValueError(f"{name}: must be >= 1")
    for name in ("time_scale", "base_rate", "ttft_ms", "tpot_ms", "overload_duration_s"):
        if getattr(s, name) is not None and getattr(s, name) <= 0:
            raise ValueError(f"{name}: must be > 0")
    if "http" in s.apis and s.prompt_format != "chat":
        raise ValueError("apis: the HTTP API takes chat messages; add --prompt-format chat")
    if "policy" in s.scheduler:
        raise ValueError("scheduler.policy: each layout sets its own policy")
    scheduler_config(s)


def scheduler_config(s: BenchSettings) -> SchedulerConfig:
    """The SchedulerConfig every layout starts from (its policy is set per layout); its class
    targets are the ones attainment is computed against."""
    known = {f.name for f in dataclasses.fields(SchedulerConfig)}
    unknown = sorted(set(s.scheduler) - known)
    if unknown:
        raise ValueError(f"scheduler: unknown key(s) {unknown}")
    return SchedulerConfig(**s.scheduler)
