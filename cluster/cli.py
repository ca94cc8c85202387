"""The `triserve` command line. Each subcommand's implementation lives in cluster/commands.py."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from workers.engine.model_presets import PRESETS

DEFAULT_SERVER = "localhost:50051"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triserve", description="Triserve command line")
    commands = parser.add_subparsers(dest="command", required=True)

    make = commands.add_parser("make-model", help="write a random-weight LLaVA checkpoint")
    make.add_argument("dir", type=Path)
    make.add_argument("--preset", choices=sorted(PRESETS), default="tiny")

    serve = commands.add_parser("serve", help="start the cluster, its gRPC and HTTP APIs")
    serve.add_argument("--config", type=Path, help="cluster YAML (see deploy/)")
    serve.add_argument("--model", type=Path, help="checkpoint directory for every pool")
    serve.add_argument("--preset", choices=sorted(PRESETS), help="embedded model (default tiny)")
    layout = serve.add_mutually_exclusive_group()
    layout.add_argument("--pools", help="e.g. encode=1,prefill=1,decode=1 or ep=2,d=1")
    layout.add_argument("--colocated", type=int, metavar="N", help="one pool of N EPD workers")
    serve.add_argument(
        "--engine",
        choices=("native", "vllm"),
        help="engine of every pool (default: the config's, else native); vllm on CPU also sets "
        "block_size 32 where a pool has the default 16",
    )
    serve.add_argument("--port", type=int, help="gRPC port (default 50051)")
    http = serve.add_mutually_exclusive_group()
    http.add_argument(
        "--http-port", type=int, help="OpenAI-compatible HTTP API port (default 8000; 0: any free)"
    )
    http.add_argument("--no-http", action="store_true", help="serve gRPC only, no HTTP API")
    serve.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (default 9464; 0: any free)"
    )
    serve.add_argument(
        "--demo-tools-port",
        type=int,
        help='start the demo MCP server (agent/demo_tools.py) on this port as server "demo"',
    )
    serve.add_argument("--address", help="join this Ray cluster instead of starting one")
    serve.add_argument("--api-token", default=os.environ.get("TRISERVE_API_TOKEN"))
    serve.add_argument("--admin-token", default=os.environ.get("TRISERVE_ADMIN_TOKEN"))

    gen = commands.add_parser("generate", help="generate text for one prompt")
    where = gen.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run the engine in this process")
    where.add_argument("--server", help=f"HOST:PORT of a running server (default {DEFAULT_SERVER})")
    gen.add_argument("--model", help="local: checkpoint directory; server: model name")
    gen.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="local only")
    gen.add_argument(
        "--prompt", required=True, help="raw text; each <image> takes the next --image"
    )
    gen.add_argument("--image", action="append", default=[], type=Path, help="PNG or JPEG file")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--ignore-eos", action="store_true")
    gen.add_argument("--device", default="cpu", help="local only")
    gen.add_argument("--dtype", default="float32", help="local only")
    gen.add_argument("--request-id", default="", help="server only")
    gen.add_argument("--ttft-ms", type=float, help="server only: TTFT target (class default)")
    gen.add_argument("--tpot-ms", type=float, help="server only: TPOT target (class default)")
    gen.add_argument("--priority", choices=["interactive", "batch"], default="", help="server")
    gen.add_argument(
        "--admission",
        choices=["reject", "degrade", "best_effort"],
        default="",
        help="server only: when predicted to miss its SLO (default: the cluster's)",
    )
    gen.add_argument("--json", action="store_true", help='print {"token_ids": [...], "text": ...}')
    _add_server_flags(gen, with_server=False)

    status = commands.add_parser(
        "status", help="pools, workers, queues, KV usage, cost models and SLO attainment"
    )
    _add_server_flags(status)
    scale = commands.add_parser("scale", help="resize a pool: triserve scale POOL=N")
    scale.add_argument("target", metavar="POOL=N")
    _add_server_flags(scale)
    trace = commands.add_parser("trace", help="one request's stage timeline")
    trace.add_argument("request_id")
    _add_server_flags(trace)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser, with_server: bool = True) -> None:
    if with_server:
        parser.add_argument("--server", help=f"HOST:PORT (default {DEFAULT_SERVER})")
    parser.add_argument("--api-token", default=os.environ.get("TRISERVE_API_TOKEN"))
    parser.add_argument("--admin-token", default=os.environ.get("TRISERVE_ADMIN_TOKEN"))
    parser.add_argument("--json-output", action="store_true", help="print JSON")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "server", None) is None and args.command != "serve":
        args.server = os.environ.get("TRISERVE_SERVER", DEFAULT_SERVER)
    from cluster import commands

    return getattr(commands, args.command.replace("-", "_"))(args)


if __name__ == "__main__":
    sys.exit(main())
