"""Agent benchmark: tool-using multimodal runs over the layouts of layouts.py, side by side.

    python -m bench.agent [--preset small|tiny] [--runs N] [--concurrency N] [--budget-ms MS]
                          [--latency-scale X] [--seed N] [--layouts client,controller,...]
                          [--second-model tiny|none] [--json OUT] [--out PREFIX] [--quick]

Starts its own cluster (the preset on encode/prefill/decode pools, and a second model on one
colocated worker, so that the controller has somewhere to route) and the demo MCP tools
(agent/demo_tools.py) in this process, then runs the same runs (workload.py: same classes,
lengths, image sizes, tools, K and budgets; other words and pixels per layout) on every layout,
interleaved: run i on each layout (in an order that rotates with i) before run i + 1,
`--concurrency` at a time, so that a noisy machine slows every layout alike. One run per layout
warms the cluster and the tool connections first (not counted). Targets (small preset): the
controller's FTR p50 at least 2x lower than the client loop's (moonshot 3x), and its p99 of
E2E / budget at most 1.10.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from bench.agent.layouts import LAYOUTS, parse_layouts, run_layout
from bench.agent.results import write_results
from bench.agent.workload import AgentShape, agent_runs
from bench.common import output
from bench.common.cluster import init_ray, private_cluster_config, start_cluster, stop_cluster

SERVER_LABEL = "bench"
WARMUP_WORDS_SEED = 999_983  # words no measured run uses
log = partial(output.log, "bench.agent")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    summary = __doc__.split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.agent", description=summary)
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--pools", default="encode=1,prefill=1,decode=1")
    parser.add_argument("--second-model", default="tiny", choices=["tiny", "small", "none"],
                        help="a preset served next to --preset, on one worker")  # fmt: skip
    parser.add_argument("--runs", "--sessions", dest="runs", type=int,
                        help="runs per layout (default 24; --quick 3)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=2, help="runs at a time")
    parser.add_argument("--budget-ms", type=float, help="every run's budget (default: per class)")
    parser.add_argument("--latency-scale", type=float, default=1.0, help="times every tool median")
    parser.add_argument("--seed", type=int, default=0)
    every = ",".join(LAYOUTS)
    parser.add_argument("--layouts", default=every, help="a subset of " + every)
    parser.add_argument("--json", type=Path, help="write every number and the machine here")
    parser.add_argument("--out", type=Path, help="write PREFIX.json, PREFIX.md, PREFIX_*.png")
    parser.add_argument("--quick", action="store_true", help="a tiny run, for smoke tests")
    args = parser.parse_args(argv)
    try:
        args.layouts = parse_layouts(args.layouts)
    except ValueError as e:
        parser.error(str(e))
    if args.concurrency < 1 or (args.runs is not None and args.runs < 1):
        parser.error("--concurrency and --runs must be >= 1")
    return args


def cluster_config(args: argparse.Namespace):
    """The preset on `--pools`, and the second model (if any) on one colocated worker."""
    from cluster.config import PoolConfig

    config = private_cluster_config(args.preset, args.pools)
    if args.second_model == "none":
        return config, ()
    name = f"{args.second_model}-colocated"
    pool = PoolConfig(name=name, stages="EPD", num_workers=1, model=name)
    models = {**config.models, name: args.second_model}
    # Routing priors. Another checkpoint is much weaker (a third of the preset's quality) and
    # quality weighs four times its default, so a call moves to it only when the preset's
    # queue costs more than the quality it gives up. The same checkpoint is as good: routing
    # then balances the two deployments' queues, sticky for the session's KV.
    weaker = args.second_model != args.preset
    agent = replace(
        config.agent,
        model_quality={args.preset: 0.9, name: 0.3 if weaker else 0.9},
        routing={**config.agent.routing, "quality": 4.0},
    )
    config = replace(config, models=models, pools=(*config.pools, pool), agent=agent)
    return config, (name,)


async def run_all(cluster, tools_url: str, shape: AgentShape, args, candidates) -> dict:
    """Every run on every layout; returns {"records": {layout: [...]}, "warmup": [...]}."""
    import httpx2
    import openai

    from agent.mcp_client import McpConnections, McpEndpoint
    from bench.agent.harness import Harness
    from cluster.client import AsyncTriserveClient

    base = f"http://{cluster.http_address}"
    mcp = McpConnections()
    endpoint = McpEndpoint(SERVER_LABEL, url=tools_url)
    async with (
        AsyncTriserveClient(cluster.address, timeout_s=10.0) as grpc_client,
        httpx2.AsyncClient(base_url=base, timeout=30.0) as http,
        openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", timeout=600.0, max_retries=0)
        as client,
    ):  # fmt: skip
        harness = Harness(
            openai=client, http=http, grpc=grpc_client, mcp=mcp, endpoint=endpoint,
            tool_specs=tuple(await mcp.tools(endpoint)), model=args.preset,
            candidate_models=(args.preset, *candidates),
        )  # fmt: skip
        try:
            (run,) = agent_runs(replace(shape, num_runs=1), args.seed, WARMUP_WORDS_SEED)
            limit = asyncio.Semaphore(args.concurrency)

            async def warm(layout):
                async with limit:
                    return asdict(await run_layout(harness, layout, run))

            warmup = await asyncio.gather(*(warm(layout) for layout in args.layouts))
            records = await _interleaved(harness, shape, args)
        finally:
            await mcp.close()
    return {"records": records, "warmup": warmup}


async def _interleaved(harness, shape: AgentShape, args) -> dict[str, list[dict]]:
    runs = {
        layout: agent_runs(shape, args.seed, args.seed * 10 + LAYOUTS.index(layout) + 1)
        for layout in args.layouts
    }
    jobs = []
    for index in range(shape.num_runs):
        turn = index % len(args.layouts)
        for layout in args.layouts[turn:] + args.layouts[:turn]:
            jobs.append((layout, runs[layout][index]))
    limit = asyncio.Semaphore(args.concurrency)

    async def one(layout, run):
        async with limit:
            record = await run_layout(harness, layout, run)
        ftr = "-" if record.ftr_ms is None else f"{record.ftr_ms:.0f}"
        e2e = "-" if record.e2e_ms is None else f"{record.e2e_ms:.0f}"
        log(f"run {run.index} ({run.kind}) on {layout}: {record.status}, FTR {ftr} ms, "
            f"E2E {e2e} ms, {record.num_tool_calls} tool calls {record.error}")  # fmt: skip
        return record

    done = await asyncio.gather(*(one(layout, run) for layout, run in jobs))
    records: dict[str, list[dict]] = {layout: [] for layout in args.layouts}
    for record in sorted(done, key=lambda r: r.run):
        records[record.layout].append(asdict(record))
    return records


def run_benchmark(args: argparse.Namespace) -> dict:
    import ray
    import torch

    from agent.demo_tools import DemoLatencies, start_demo_server
    from bench.agent.report import summarize
    from bench.common.machine import describe_machine

    started = time.perf_counter()
    if args.quick:
        shape = AgentShape.quick()
    else:
        shape = AgentShape.tool_bound() if args.preset == "tiny" else AgentShape()
    shape = replace(shape, num_runs=args.runs or shape.num_runs).with_budget(args.budget_ms)
    config, candidates = cluster_config(args)
    started_ray = init_ray(object_store_mb=512)
    cluster = start_cluster(config)
    tools = start_demo_server(DemoLatencies(scale=args.latency_scale, seed=args.seed))
    try:
        log(f"{', '.join(args.layouts)}: {shape.num_runs} runs each, tools at {tools.url}")
        results = asyncio.run(run_all(cluster, tools.url, shape, args, candidates))
        machine = describe_machine(torch.device("cpu"), with_ray=True)
    finally:
        tools.close()
        for problem in stop_cluster(cluster):
            log(problem)
        if started_ray:
            ray.shutdown()
    results.update(
        config={
            **vars(args),
            "json": _text(args.json),
            "out": _text(args.out),
            "shape": asdict(shape),
        },
        cluster={
            "models": dict(config.models),
            "model": args.preset,
            "candidate_models": [args.preset, *candidates],
            "pools": [asdict(pool) for pool in config.pools],
        },
        machine=machine,
        summary=summarize(results["records"], args.preset),
        runtime_s=time.perf_counter() - started,
    )
    return results


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run_benchmark(args)
    markdown = write_results(results, args.out)
    output.publish("bench.agent", results, markdown, args.json)
    return results
