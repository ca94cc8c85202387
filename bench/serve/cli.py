"""`python -m bench.serve`: flags, a YAML/JSON config file under them, and the entry point.

Precedence: a flag given on the command line, then the `--config` file, then `--quick`'s values,
then the defaults (settings.py). The file's keys are the flags' names (`duration_s` or
`duration-s`); lists may be YAML lists, the mix a mapping, and a `scheduler:` mapping sets
SchedulerConfig fields (e.g. the class targets `sand_ttft_ms`) for every layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.serve.settings import QUICK, BenchSettings, from_values

D = BenchSettings()


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items()) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(name: str, text: str) -> str:
    """' (default: X; --quick: Y)', or '' where the help text says the default itself."""
    value = getattr(D, name)
    parts = [] if value is None and "default" in text else [f"default: {_text(value)}"]
    if name in QUICK:
        parts.append(f"--quick: {_text(QUICK[name])}")
    return f" ({'; '.join(parts)})" if parts else ""


FLAGS = [
    # (flag, metavar or None for a switch, help)
    ("--config", "FILE", "YAML or JSON file of settings (keys: the flags' names)"),
    ("--preset", "tiny|mini|small", "model preset"),
    ("--engine", "native|vllm", "every pool's engine (vllm: 32-token KV blocks on CPU)"),
    ("--layouts", "L1,L2", "colocated-fcfs, disagg-fcfs, disagg-slo, run in this order"),
    ("--workers", "N", "worker processes of every layout"),
    ("--disagg-pools", "SPEC", "pools of the disaggregated layouts (workers must add up)"),
    ("--torch-threads", "N", "torch threads per worker"),
    ("--device", "cpu|cuda", "where workers run (cuda: all share GPU 0)"),
    ("--object-store-mb", "MB", "Ray object store size when the benchmark starts Ray"),
    ("--rates", "R1,R2", "request rates (req/s) of the sweep"),
    ("--duration-s", "S", "seconds of arrivals per point (rate x duration requests)"),
    ("--num-requests", "N", "requests per point (default: rate x duration)"),
    ("--arrival", "poisson|gamma|trace", "arrival process"),
    ("--burstiness", "CV", "gamma: coefficient of variation of the gaps (1 = Poisson)"),
    (
        "--trace",
        "FILE",
        "Mooncake .jsonl or Azure .csv trace (with --arrival trace; default: none)",
    ),
    ("--trace-format", "mooncake|azure", "trace format (default: from the extension)"),
    ("--time-scale", "F", "replay the trace's own times x F (default: rescaled to each rate)"),
    ("--max-requests", "N", "trace: replay its first N requests (default: all)"),
    ("--mix", "K=S,...", "workload mix over text, image, ocr, multi_image, video"),
    ("--prompt-tokens", "LO-HI", "text tokens per prompt"),
    ("--output-tokens", "LO-HI", "output tokens per request (EOS ignored)"),
    ("--multi-images", "LO-HI", "images per multi_image request"),
    ("--video-frames", "LO-HI", "frames per video request"),
    ("--reuse-fraction", "F", "share of requests repeating an earlier prefix and images"),
    ("--prompt-format", "raw|chat", "raw prompt with <image> slots, or chat messages"),
    (
        "--apis",
        "grpc,http",
        "APIs the requests alternate over (request i: the (i mod n)-th), compared side by side",
    ),
    ("--ttft-ms", "MS", "TTFT target sent with every request (default: class targets)"),
    ("--tpot-ms", "MS", "TPOT target sent with every request (default: class targets)"),
    ("--overload", None, "add an overload point (--no-overload: none)"),
    ("--overload-factor", "X", "overload rate = X x base rate"),
    ("--base-rate", "R", "base of the overload rate (default: the highest --rates)"),
    (
        "--overload-duration-s",
        "S",
        "seconds of arrivals of the overload point (default: half --duration-s)",
    ),
    ("--warmup", None, "an untimed request per kind before each layout (--no-warmup)"),
    ("--request-timeout-s", "S", "client deadline of one request"),
    ("--drain-timeout-s", "S", "wait after a point's last send; then cancel the rest"),
    ("--seed", "N", "seed of arrivals, kinds, lengths and images"),
    ("--out", "DIR", "results folder (default: bench/results/serve_PRESET_DEVICE[_quick])"),
    ("--quick", None, "a 1-2 minute smoke run"),
]


def parse_args(argv: list[str] | None) -> BenchSettings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve",
        description="Serving benchmark: layouts x request rates through the gRPC client SDK "
        "and the OpenAI-compatible HTTP API.",
        argument_default=argparse.SUPPRESS,  # absent flags do not hide the config file's values
    )
    for flag, metavar, text in FLAGS:
        name = flag[2:].replace("-", "_")
        help_text = text if name == "config" else text + _default(name, text)
        if metavar is None and name != "quick":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif metavar is None:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, metavar=metavar, help=help_text)
    args = vars(parser.parse_args(argv))
    values = load_config_file(args.pop("config")) if "config" in args else {}
    values.update(args)
    try:
        return from_values(values)
    except ValueError as e:
        parser.error(str(e))


def load_config_file(path: str) -> dict:
    import yaml

    try:
        text = Path(path).read_text()
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise SystemExit(f"--config {path}: cannot read it: {e}") from None
    if not isinstance(raw, dict):
        raise SystemExit(f"--config {path}: expected a mapping of settings")
    return raw


def main(argv: list[str] | None = None) -> dict:
    from bench.serve.sweep import run_benchmark

    settings = parse_args(argv)
    results = run_benchmark(settings)
    print(results["summary_md"], end="")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
