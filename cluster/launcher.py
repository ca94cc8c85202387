"""Start and stop a whole Triserve cluster: Ray, the control plane (scheduler + pools) and the
Ray Serve ingress (gRPC, and the OpenAI-compatible HTTP API). Used by `triserve serve`, the tests
and the benchmarks."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config import AgentConfig, McpServerConfig
from agent.mcp_endpoint import McpEndpoint
from cluster.config import ClusterConfig, ConfigError
from cluster.config_sources import resolve_config
from cluster.names import NAMESPACE

APP_NAME = "triserve"  # the Serve application; clients send it as `application` metadata
START_TIMEOUT_S = 900.0  # loading every model (the small preset is written on first use)
# Ray restarts a dead control plane, which takes back the workers (README "Failures"); it loads
# no model, so a restart costs little, and a cluster without it serves nothing.
CONTROL_PLANE_MAX_RESTARTS = -1
DEMO_LABEL = "demo"  # the MCP server label of agent/demo_tools.py when the launcher starts it


@dataclass
class RunningCluster:
    config: ClusterConfig
    address: str  # host:port of the gRPC API
    control_plane: object  # the ControlPlane actor handle
    started_ray: bool
    cluster_id: str  # in the names of the worker actors (workers/actor.py)
    metrics_address: str | None = None  # host:port serving /metrics; None: metrics are off
    http_address: str | None = None  # host:port of the OpenAI-compatible HTTP API; None: off
    demo_tools: object | None = None  # agent/demo_tools.py's server, when the config asks

    def stop(self) -> None:
        import ray
        from ray import serve

        from workers.actor import kill_worker_actors

        serve.shutdown()
        if self.demo_tools is not None:
            self.demo_tools.close()
        try:
            ray.get(self.control_plane.shutdown.remote(), timeout=60)
        finally:
            ray.kill(self.control_plane)
            kill_worker_actors(self.cluster_id)  # detached: what the shutdown did not stop
            if self.started_ray:
                ray.shutdown()


def set_local_ray_defaults() -> None:
    """Environment defaults for a Ray that Triserve starts on this machine (set before
    ray.init; a value already set wins): no usage stats, no auth token file, and Ray's actor
    processes at normal CPU priority (Ray's default nice is 15), so that engines, niced further
    by `PoolConfig.nice`, yield shared cores to the ingress, the control plane and the proxy."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_cluster(config: ClusterConfig, ray_init_kwargs: dict | None = None) -> RunningCluster:
    """Start (or join) Ray, launch the pools, deploy the ingress; returns once it serves."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from cluster.control_plane import MAX_CONCURRENCY, ControlPlane
    from cluster.ingress import Ingress
    from cluster.names import CONTROL_PLANE_NAME
    from cluster.serve_grpc import SERVICER_FUNCTIONS
    from workers.actor import kill_worker_actors, new_cluster_id

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_ray = not ray.is_initialized()
    if started_ray:
        if config.ray_address is None:
            set_local_ray_defaults()  # a private, local cluster
        ray.init(
            address=config.ray_address,
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
            **(ray_init_kwargs or {}),
        )
    if config.port == 0:
        config = replace(config, port=free_port(config.host))
    if config.http_port == 0:
        config = replace(config, http_port=free_port(config.host))
    if config.metrics_port == 0:  # chosen here: a restarted control plane serves on it again
        config = replace(config, metrics_port=free_port(config.host))
    cluster_id = new_cluster_id()
    control_plane = (
        ray.remote(ControlPlane)
        .options(
            name=CONTROL_PLANE_NAME,
            namespace=NAMESPACE,
            num_cpus=0,
            max_concurrency=MAX_CONCURRENCY,
            max_restarts=CONTROL_PLANE_MAX_RESTARTS,
        )
        .remote(config, cluster_id)
    )
    kill_worker_actors()  # of a cluster whose driver died (its name was free); ours has none yet
    try:
        metrics_address = ray.get(control_plane.start.remote(), timeout=START_TIMEOUT_S)
    except BaseException:
        ray.kill(control_plane)
        kill_worker_actors(cluster_id)
        if started_ray:
            ray.shutdown()
        raise
    # Serve runs its HTTP proxy whenever it runs its gRPC one: with the HTTP API off, it
    # listens on a free local port, where the ingress answers 404.
    serves_http = config.http_port is not None
    http_host = config.host if serves_http else "127.0.0.1"
    serve.start(
        grpc_options=gRPCOptions(port=config.port, grpc_servicer_functions=SERVICER_FUNCTIONS),
        http_options={"host": http_host, "port": config.http_port or free_port(http_host)},
    )
    model_dirs = {name: str(config.model_dir(name)) for name in config.models}
    agent, demo_tools = with_demo_tools(config.agent, config.host)
    serve.run(
        Ingress.options(
            max_ongoing_requests=config.limits.max_ongoing_calls,
            max_queued_requests=config.limits.max_queued_calls,
        ).bind(
            CONTROL_PLANE_NAME,
            NAMESPACE,
            model_dirs,
            config.api_token,
            config.admin_token,
            limits=config.limits,
            serve_http=serves_http,
            responses=config.responses,
            agent=agent,
        ),
        name=APP_NAME,
        route_prefix="/",
    )
    return RunningCluster(
        config=config,
        address=f"{config.host}:{config.port}",
        control_plane=control_plane,
        started_ray=started_ray,
        cluster_id=cluster_id,
        metrics_address=metrics_address,
        http_address=f"{config.host}:{config.http_port}" if serves_http else None,
        demo_tools=demo_tools,
    )


def with_demo_tools(agent: AgentConfig, host: str) -> tuple[AgentConfig, object | None]:
    """Start agent/demo_tools.py's MCP server when `agent.demo_tools_port` is set, and declare
    it as server "demo" (requests name it: {"type": "mcp", "server_label": "demo"})."""
    if agent.demo_tools_port is None or agent.server(DEMO_LABEL) is not None:
        return agent, None
    from agent.demo_tools import start_demo_server

    server = start_demo_server(host=host, port=agent.demo_tools_port)
    demo = McpServerConfig(endpoint=McpEndpoint(label=DEMO_LABEL, url=server.url))
    return replace(agent, mcp_servers=(*agent.mcp_servers, demo)), server


def config_from_args(args: argparse.Namespace) -> ClusterConfig:
    """`triserve serve` flags on top of the YAML file (or the defaults)."""
    config = resolve_config(args.config, args.pools, args.colocated)
    if args.model and args.preset:
        raise ConfigError("use either --model or --preset, not both")
    source = str(Path(args.model).expanduser()) if args.model else args.preset
    if source:
        if args.model and not (Path(source) / "config.json").exists():
            raise ConfigError(f"--model {source}: no config.json there")
        name = Path(source).name if args.model else source
        pools = tuple(replace(pool, model=name) for pool in config.pools)
        config = replace(config, models={name: source}, pools=pools)
    if args.engine:
        config = replace(config, pools=tuple(p.on_engine(args.engine) for p in config.pools))
    overrides = {
        "port": args.port,
        "http_port": args.http_port,
        "metrics_port": args.metrics_port,
        "ray_address": args.address,
        "api_token": args.api_token,
        "admin_token": args.admin_token,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.demo_tools_port is not None:
        config = replace(config, agent=replace(config.agent, demo_tools_port=args.demo_tools_port))
    return replace(config, http_port=None) if args.no_http else config


def run_until_interrupted(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    layout = ", ".join(f"{p.name}={p.num_workers}x{p.stages}" for p in config.pools)
    print(f"starting Triserve: pools {layout}; models {sorted(config.models)}", flush=True)
    started = time.monotonic()
    cluster = start_cluster(config)
    metrics = (
        f"Prometheus metrics on http://{cluster.metrics_address}/metrics"
        if cluster.metrics_address
        else "metrics off"
    )
    http = f"the OpenAI API on http://{cluster.http_address}/v1" if cluster.http_address else ""
    try_http = (
        f"  curl http://{cluster.http_address}/v1/chat/completions "
        '-H "Content-Type: application/json" -d \'{"messages": [{"role": "user", '
        '"content": "Hello!"}], "max_tokens": 32}\'\n'
        if cluster.http_address
        else ""
    )
    if cluster.http_address and cluster.demo_tools is not None:
        try_http += (
            f"  curl http://{cluster.http_address}/v1/responses "
            '-H "Content-Type: application/json" -d \'{"input": "Find facts.", "tools": '
            '[{"type": "mcp", "server_label": "demo", "allowed_tools": ["lookup", "search"]}], '
            '"tool_choice": "required", "max_tool_calls": 2, "max_output_tokens": 16, '
            '"latency_budget_ms": 5000}\'   # an agent run with the demo MCP tools '
            f"({cluster.demo_tools.url})\n"
        )
    print(
        f"Triserve is serving gRPC on {cluster.address}, {http + ', ' if http else ''}{metrics} "
        f"(ready in {time.monotonic() - started:.0f} s). Try:\n"
        f"  .venv/bin/triserve generate --server {cluster.address} "
        f'--prompt "Hello, who are you?" --max-tokens 32\n'
        f"{try_http}"
        f"  .venv/bin/triserve status --server {cluster.address}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    print("shutting down...", flush=True)
    cluster.stop()
    return 0
