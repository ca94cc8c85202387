"""Run every layout over every sweep point, one cluster at a time, in one Ray session.

Layouts run one after another (bench/common/cluster.py says why): start the cluster, warm it
up, send each point (waiting for the cluster to be idle in between), stop it, and wait until its
control plane is gone before the next one starts. A layout that fails to start or breaks mid-run
is recorded with its error; the others still run.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from functools import partial

from bench.common import output
from bench.common.cluster import init_ray, start_cluster, stop_cluster
from bench.serve import metrics
from bench.serve.comparison import compare
from bench.serve.layouts import LAYOUTS, DeploymentSpec, cluster_config
from bench.serve.loadgen import PointPlan, run_point, wait_until_idle, warm_up
from bench.serve.mix import KINDS
from bench.serve.points import SweepPoint, synthetic_points, trace_points, warmup_requests
from bench.serve.progress import Progress
from bench.serve.settings import BenchSettings, scheduler_config
from bench.serve.trace_files import load_trace
from bench.serve.workload import ModelLimits, TextSource, WorkloadBuilder, WorkloadSpec
from scheduler.config import REQUEST_CLASSES

log = partial(output.log, "bench.serve")


def point_result(
    point: SweepPoint, records: list, wall_s: float, is_idle: bool, apis: tuple[str, ...]
) -> dict:
    return {
        "point": point.name, "kind": point.kind, "rate": point.rate,
        "offered_rate": point.offered_rate, "num_requests": len(point.requests),
        "wall_s": wall_s, "idle_after": is_idle,
        "summary": metrics.summarize(records, wall_s),
        "by_kind": metrics.grouped(records, lambda r: r.kind, KINDS),
        "by_class": metrics.grouped(records, lambda r: r.slo_class, REQUEST_CLASSES),
        "class_mismatches": metrics.class_mismatches(records),
        "by_api": metrics.grouped(records, lambda r: r.api, apis) if len(apis) > 1 else {},
    }  # fmt: skip


def run_layout(name: str, deployment: DeploymentSpec, points, warmup, settings) -> tuple:
    """One layout over every point; returns (layout result, records)."""
    layout = LAYOUTS[name]
    config = cluster_config(layout, deployment)
    result = {"name": name, "policy": layout.policy, "error": None, "sweep": [], "overload": None,
              "pools": [f"{p.name}={p.num_workers}x{p.stages}" for p in config.pools]}  # fmt: skip
    log(f"{name}: starting pools {', '.join(result['pools'])}, policy {layout.policy}")
    started = time.perf_counter()
    try:
        cluster = start_cluster(config)
    except Exception as e:
        log(f"{name}: the cluster did not start: {e!r}")
        result["error"] = f"start failed: {e!r}"
        return result, []
    result["startup_s"] = time.perf_counter() - started
    all_records = []
    try:
        if warmup:
            asyncio.run(warm_up(cluster.address, warmup, settings.prompt_format))
        run_id = uuid.uuid4().hex[:6]
        for point in points:
            plan = PointPlan(
                layout=name,
                point=point.name,
                rate=point.rate,
                requests=point.requests,
                prompt_format=settings.prompt_format,
                ttft_ms=settings.ttft_ms,
                tpot_ms=settings.tpot_ms,
                request_timeout_s=settings.request_timeout_s,
                drain_timeout_s=settings.drain_timeout_s,
                run_id=run_id,
                apis=settings.apis,
                http_address=cluster.http_address,
            )
            progress = Progress(f"{name} {point.name}", len(point.requests))
            records, wall_s = asyncio.run(run_point(cluster.address, plan, progress))
            is_idle = asyncio.run(wait_until_idle(cluster.address))
            entry = point_result(point, records, wall_s, is_idle, settings.apis)
            if point.kind == "overload":
                result["overload"] = entry
            else:
                result["sweep"].append(entry)
            all_records += records
            s = entry["summary"]
            failed = s["num_failed"] + s["num_timeout"]
            attained = "-" if s["attainment"] is None else f"{s['attainment']:.0%}"
            log(
                f"{name} {point.name}: attainment {attained}, {s['num_rejected']} rejected, "
                f"{failed} failed"
            )
    except Exception as e:
        log(f"{name}: the run broke: {e!r}")
        traceback.print_exc()
        result["error"] = f"run failed: {e!r}"
    finally:
        for problem in stop_cluster(cluster):
            log(f"{name}: {problem}")
    attainment = {p["rate"]: p["summary"]["attainment"] for p in result["sweep"]}
    result["goodput"] = metrics.goodput(attainment)
    return result, all_records


def _workload(settings: BenchSettings):
    """The workload builder (it needs the model's tokenizer and limits) and the points."""
    from workers.engine.model_config import ModelConfig
    from workers.engine.model_writer import ensure_model
    from workers.engine.prompt import load_tokenizer

    model_dir = ensure_model(settings.preset)
    model = ModelConfig.from_pretrained(model_dir)
    limits = ModelLimits(
        num_image_tokens=model.num_image_tokens,
        max_model_len=model.text.max_position_embeddings,
    )
    spec = WorkloadSpec(
        mix=settings.mix,
        prompt_tokens=settings.prompt_tokens,
        output_tokens=settings.output_tokens,
        multi_images=settings.multi_images,
        video_frames=settings.video_frames,
        reuse_fraction=settings.reuse_fraction,
        prompt_format=settings.prompt_format,
    )
    builder = WorkloadBuilder(
        spec=spec,
        limits=limits,
        scheduler=scheduler_config(settings),
        text=TextSource(load_tokenizer(model_dir)),
        ttft_ms=settings.ttft_ms,
        tpot_ms=settings.tpot_ms,
    )
    if settings.arrival == "trace":
        rows = load_trace(settings.trace, settings.trace_format, settings.max_requests)
        points = trace_points(settings, builder, rows)
    else:
        points = synthetic_points(settings, builder)
    warmup = warmup_requests(settings, builder) if settings.warmup else []
    return builder, points, warmup


def run_benchmark(settings: BenchSettings) -> dict:
    """Run everything, write the results folder, return the results (summary_md included)."""
    import ray
    import torch

    from bench.common.machine import describe_machine
    from bench.serve.output import write_results

    started = time.perf_counter()
    log(f"building the workload ({settings.preset} preset)")
    builder, points, warmup = _workload(settings)
    log(f"{len(points)} points, {sum(len(p.requests) for p in points)} requests per layout")
    scheduler = scheduler_config(settings)
    deployment = DeploymentSpec(
        preset=settings.preset,
        engine=settings.engine,
        num_workers=settings.workers,
        disagg_pools=settings.disagg_pools,
        torch_threads=settings.torch_threads,
        device=settings.device,
        scheduler=scheduler,
    )
    deployment.check()
    started_ray = init_ray(settings.object_store_mb)
    layouts, records = {}, []
    try:
        for name in settings.layouts:
            layouts[name], layout_records = run_layout(name, deployment, points, warmup, settings)
            records += layout_records
        machine = describe_machine(torch.device(settings.device), with_ray=True)
    finally:
        if started_ray:
            ray.shutdown()
    results = {
        "config": settings.as_dict(),
        "model": {
            "preset": settings.preset,
            **builder.limits.__dict__,
            "max_images_per_request": builder.max_images,
        },  # fmt: skip
        "slo_targets_ms": {c: scheduler.slo_for(c) for c in REQUEST_CLASSES},
        "class_thresholds": {
            "rock_min_images": scheduler.rock_min_images,
            "rock_min_image_pixels": scheduler.rock_min_image_pixels,
            "rock_min_prompt_tokens": scheduler.rock_min_prompt_tokens,
        },
        "points": [
            {
                "point": p.name,
                "kind": p.kind,
                "rate": p.rate,
                "offered_rate": p.offered_rate,
                "num_requests": len(p.requests),
            }
            for p in points
        ],  # fmt: skip
        "layouts": layouts,
        "comparisons": compare(layouts),
        "machine": machine,
        "runtime_s": time.perf_counter() - started,
        "records": [r.as_dict() for r in records],
    }
    out_dir = settings.out_dir()
    results["summary_md"] = write_results(results, out_dir)
    log(f"wrote {out_dir} in {results['runtime_s']:.0f} s")
    return results
