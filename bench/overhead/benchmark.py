"""Coordination-overhead benchmark: how much of a request's end-to-end time is not the model.

    python -m bench.overhead [--preset tiny|small] [--requests N] [--json OUT] [--quick]

Starts its own cluster (pools encode=1, prefill=1, decode=1; gRPC on a free port) and sends, at
low load (one request at a time, after a warm-up), text-only and one-image requests through the
client SDK: ~64 prompt text tokens, 64 output tokens, greedy, EOS ignored, every request fresh.
Each request's trace splits the client's end-to-end time into engine compute, queueing,
transfers and everything else (see breakdown.py). In the same run it measures the KV
handoff bandwidth (from the traces, and directly for a 64 MiB array through the workers' own
ObjectStoreTransport) against an in-process memory copy (see handoff.py).

Targets (one-image requests, small preset, low load): overhead <= 10 % of e2e at p50; KV handoff
>= 50 % of memcpy bandwidth.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import asdict
from functools import partial
from pathlib import Path

from bench.common import output
from bench.overhead.breakdown import Breakdown, class_summary, request_record
from bench.overhead.handoff import measure_memcpy, measure_object_store_handoff
from bench.overhead.report import markdown_report
from bench.overhead.workload import CLASSES, RequestSource, WorkloadConfig, timed_request
from cluster.state_messages import DONE_STATES, trace_events
from scheduler.trace_breakdown import trace_breakdown

POOLS = "encode=1,prefill=1,decode=1"
HEADLINE_CLASS = "one_image"  # the class the targets are about
OVERHEAD_TARGET = 0.10  # overhead fraction of e2e at p50, at most
HANDOFF_TARGET = 0.50  # KV handoff bandwidth over memcpy bandwidth, at least
TRACE_TIMEOUT_S = 10.0  # the last token can reach the client just before the trace ends

log = partial(output.log, "bench.overhead")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--requests", type=int, default=20, help="measured requests per class")
    parser.add_argument("--warmup", type=int, default=None, help="per class (default 3; quick 1)")
    parser.add_argument("--json", type=Path, help="write every number and the machine here")
    parser.add_argument("--quick", action="store_true", help="small arrays, for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    return args


def finished_trace(client, request_id: str):
    deadline = time.monotonic() + TRACE_TIMEOUT_S
    while True:
        trace = client.trace(request_id)
        if trace.state in DONE_STATES or time.monotonic() > deadline:
            return trace
        time.sleep(0.01)


def run_requests(address: str, source: RequestSource, num_requests: int, num_warmup: int):
    """Warm-up, then `num_requests` per class, interleaved, one at a time."""
    from cluster.client import TriserveClient

    run_id = uuid.uuid4().hex[:8]
    breakdowns: dict[str, list[Breakdown]] = {name: [] for name in CLASSES}
    with TriserveClient(address, timeout_s=300.0) as client:
        for i in range(num_warmup + num_requests):
            for request_class in CLASSES:
                request_id = f"overhead-{run_id}-{request_class}-{i}"
                kwargs = source.request(request_class)
                timing = timed_request(client, request_id, request_class, kwargs)
                if i < num_warmup:
                    continue
                trace = trace_breakdown(trace_events(finished_trace(client, request_id)))
                breakdowns[request_class].append(Breakdown(timing=timing, trace=trace))
            if i + 1 == num_warmup:
                log(f"warm-up done ({num_warmup} per class)")
    return breakdowns


def targets(per_class: dict, kv_gbps: float | None, memcpy_gbps: float) -> dict:
    overhead = per_class[HEADLINE_CLASS]["overhead_fraction"]["p50"]
    ratio = kv_gbps / memcpy_gbps if kv_gbps else None
    return {
        "overhead_p50": {
            "class": HEADLINE_CLASS, "value": overhead, "target": f"<= {OVERHEAD_TARGET}",
            "met": overhead is not None and overhead <= OVERHEAD_TARGET,
        },
        "kv_handoff_over_memcpy": {
            "value": ratio, "target": f">= {HANDOFF_TARGET}",
            "met": ratio is not None and ratio >= HANDOFF_TARGET,
        },
    }  # fmt: skip


def run_benchmark(args: argparse.Namespace) -> dict:
    import torch

    from bench.common.cluster import private_cluster_config, start_cluster, stop_cluster
    from bench.common.machine import describe_machine
    from workers.engine.prompt import load_tokenizer

    started = time.perf_counter()
    config = private_cluster_config(args.preset, POOLS)
    workload = WorkloadConfig(seed=args.seed)
    source = RequestSource(load_tokenizer(config.model_dir(args.preset)), workload)
    log(f"starting a cluster: {POOLS}, preset {args.preset}")
    cluster = start_cluster(config)
    try:
        log(f"serving on {cluster.address} after {time.perf_counter() - started:.0f} s")
        breakdowns = run_requests(cluster.address, source, args.requests, args.warmup)
        log("requests done; measuring memcpy and the object-store handoff")
        memcpy = measure_memcpy(64 * 2**20 if args.quick else 256 * 2**20, 5 if args.quick else 20)
        direct = measure_object_store_handoff(
            8 * 2**20 if args.quick else 64 * 2**20, 3 if args.quick else 10
        )
        machine = describe_machine(torch.device("cpu"), with_ray=True)
    finally:
        for problem in stop_cluster(cluster):
            log(problem)
    per_class = {name: class_summary(items) for name, items in breakdowns.items()}
    all_kv = class_summary([b for items in breakdowns.values() for b in items])["kv_handoff_gbps"]
    kv_gbps = all_kv["p50"]
    headline = per_class[HEADLINE_CLASS]["overhead_fraction"]
    return {
        "overhead_p50_fraction": headline["p50"],
        "overhead_p90_fraction": headline["p90"],
        "headline_class": HEADLINE_CLASS,
        "kv_handoff_gbps": kv_gbps,
        "memcpy_gbps": memcpy["gbps"],
        "kv_handoff_over_memcpy": kv_gbps / memcpy["gbps"] if kv_gbps else None,
        "gbps_definition": "payload bytes / seconds / 1e9, median over repeats or requests",
        "per_class": per_class,
        "handoff": {"traces_kv": all_kv, "object_store": direct, "memcpy": memcpy},
        "targets": targets(per_class, kv_gbps, memcpy["gbps"]),
        "machine": machine,
        "config": {
            "preset": args.preset,
            "pools": POOLS,
            "requests_per_class": args.requests,
            "warmup_per_class": args.warmup,
            "quick": args.quick,
            "workload": asdict(workload),
        },
        "requests": [request_record(b) for items in breakdowns.values() for b in items],
        "runtime_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run_benchmark(args)
    output.publish("bench.overhead", results, markdown_report(results), args.json)
    return results
