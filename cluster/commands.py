"""What each `triserve` subcommand does. Errors print `error: ...` and return exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def make_model(args: argparse.Namespace) -> int:
    from workers.engine.model_writer import write_checkpoint

    if (args.dir / "config.json").exists():
        return _error(f"{args.dir} already holds a checkpoint")
    write_checkpoint(args.dir, args.preset)
    print(f"wrote the {args.preset} checkpoint to {args.dir}")
    return 0


def generate(args: argparse.Namespace) -> int:
    return _generate_local(args) if args.local else _generate_remote(args)


def _generate_local(args: argparse.Namespace) -> int:
    from workers.contract.errors import InvalidRequestError
    from workers.engine.local import generate_local
    from workers.engine.model_writer import ensure_model

    model_dir = Path(args.model) if args.model else ensure_model(args.preset)
    try:
        result = generate_local(args, model_dir)
    except InvalidRequestError as e:
        return _error(str(e))
    _print_answer(args, result.token_ids, result.text)
    return 0


def _generate_remote(args: argparse.Namespace) -> int:
    from cluster.client import Completion, TriserveClient, TriserveError

    try:
        images = [Path(path).read_bytes() for path in args.image]
    except OSError as e:
        return _error(f"cannot read {e.filename}: {e.strerror}")
    done = Completion()
    try:
        with TriserveClient(args.server, api_token=args.api_token) as client:
            for chunk in client.generate(
                prompt=args.prompt,
                images=images,
                model=args.model or "",
                request_id=args.request_id,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed,
                stop=args.stop,
                ignore_eos=args.ignore_eos,
                ttft_ms=args.ttft_ms,
                tpot_ms=args.tpot_ms,
                priority=args.priority,
                admission=args.admission,
            ):
                done.add(chunk)
                if not args.json:
                    print(chunk.text, end="", flush=True)
    except TriserveError as e:
        hint = f" (retry after {e.retry_after_ms:.0f} ms)" if e.retry_after_ms else ""
        return _error(f"{e.code.name}: {e.details}{hint}")
    if args.json:
        _print_answer(args, done.token_ids, done.text, done.request_id)
    else:
        print(f"\n[{done.finish_reason}; request {done.request_id}]", file=sys.stderr)
    return 0


def _print_answer(args, token_ids: list[int], text: str, request_id: str = "") -> None:
    if args.json:
        answer = {"token_ids": token_ids, "text": text}
        if request_id:
            answer["request_id"] = request_id
        print(json.dumps(answer))
    else:
        print(text)


def serve(args: argparse.Namespace) -> int:
    from cluster.config import ConfigError
    from cluster.launcher import run_until_interrupted

    try:
        return run_until_interrupted(args)
    except ConfigError as e:
        return _error(str(e))


def status(args: argparse.Namespace) -> int:
    return _remote(args, lambda client: client.cluster_state(), _print_state)


def scale(args: argparse.Namespace) -> int:
    pool, _, count = args.target.partition("=")
    if not pool or not count.isdigit():
        return _error("expected POOL=N, e.g. decode=2")
    return _remote(args, lambda client: client.scale(pool, int(count)), _print_pool)


def trace(args: argparse.Namespace) -> int:
    return _remote(args, lambda client: client.trace(args.request_id), _print_trace)


def _remote(args, call, show) -> int:
    from cluster.client import TriserveClient, TriserveError

    try:
        with TriserveClient(args.server, args.api_token, args.admin_token, timeout_s=60) as c:
            message = call(c)
    except TriserveError as e:
        return _error(f"{e.code.name}: {e.details}")
    if args.json_output:
        print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))
    else:
        show(message)
    return 0


def _print_state(state) -> None:
    print(f"requests in flight: {state.requests_in_flight}  {dict(state.requests_by_state)}")
    queued = ", ".join(f"{stage} {n}" for stage, n in sorted(state.queued_by_stage.items()))
    print(f"scheduler queues: {queued or 'none'}")
    print(
        f"cache hits: prefix {state.prefix_hit_rate:.1%} of prompt tokens, "
        f"embeddings {state.embedding_hit_rate:.1%} of images"
    )
    if state.classes:
        _print_classes(state.classes)
    if state.agent:
        _print_agent(state.agent)
    for pool in state.pools:
        _print_pool(pool)


CLASS_COLUMNS = (
    "finished",
    "attained",
    "rejected",
    "degraded",
    "best_effort",
    "failed",
    "cancelled",
)


def _print_classes(classes) -> None:
    print(f"{'class':<8}" + "".join(f"{c:>12}" for c in (*CLASS_COLUMNS, "attainment")))
    for row in classes:
        rate = f"{row.attained / row.finished:.1%}" if row.finished else "-"
        counts = "".join(f"{getattr(row, c):>12}" for c in CLASS_COLUMNS)
        print(f"{row.request_class:<8}{counts}{rate:>12}")


def _print_agent(rows) -> None:
    """Three lines per class (seed 001 §9's figures); "-" where nothing was measured yet."""

    def share(row, name: str) -> str:
        return f"{getattr(row, name):.1%}" if row.HasField(name) else "-"

    def tail(row, figure: str) -> str:
        points = [f"{figure}_p{p}_ms" for p in (50, 90, 99)]
        if not row.HasField(points[0]):
            return f"{figure.upper()} -"
        return f"{figure.upper()} " + "/".join(f"{getattr(row, p) / 1000:.2f}" for p in points)

    print("agent runs (FTR and E2E: p50/p90/p99 s of the runs that answered)")
    for row in rows:
        cost = "-"
        if row.HasField("cost_per_successful_run_s"):
            cost = f"{row.cost_per_successful_run_s:.2f}"
        print(
            f"  {row.request_class}: {row.runs} runs, {row.completed} completed "
            f"({row.within_budget} within budget), {row.incomplete} incomplete, "
            f"{row.failed} failed, {row.cancelled} cancelled"
        )
        print(f"    {tail(row, 'ftr')}, {tail(row, 'e2e')}, {cost} engine-s per completed run")
        print(
            f"    tools {row.tool_calls_per_run:.2f} calls/run "
            f"({share(row, 'tool_cache_hit_rate')} cached), {share(row, 'tool_share_of_ftr')} "
            f"of FTR; prompt tokens {share(row, 'cached_share')} cached "
            f"({row.reprefilled_tokens} reprefilled)"
        )


def _print_pool(pool) -> None:
    print(
        f"pool {pool.name} ({pool.stages}, model {pool.model}): target {pool.target_workers}, "
        f"live {pool.live_workers}, starting {pool.starting_workers}, "
        f"suspected {pool.suspected_workers}"
    )
    for w in pool.workers:
        flag = " draining" if w.draining else ""
        flag += " suspected" if w.suspected else ""
        print(
            f"  {w.worker_id}{flag}: queued {w.encode_queued} img, {w.waiting} waiting, "
            f"{w.running} running, KV {w.kv_blocks_used}/{w.kv_blocks_total} blocks "
            f"({w.kv_blocks_cached} cached), {w.embedding_cache_entries} embeddings, "
            f"{w.prefix_cache_blocks} prefix blocks, {w.pinned_blocks} pinned by "
            f"{w.paused_requests} paused calls"
        )
        if w.HasField("cost_model"):
            _print_cost_model(w.stages, w.cost_model)


def _print_cost_model(stages: str, cost) -> None:
    def corrected(stage: str) -> str:
        correction = cost.corrections.get(stage, 1.0)
        return f"x{correction:.2f} from {cost.num_observations.get(stage, 0)} jobs"

    if "E" in stages:
        print(
            f"    encode  {cost.encode_base_ms:.2f} ms + {cost.encode_ms_per_image_token:.4f} "
            f"ms/image token, {corrected('encode')}"
        )
    if "P" in stages:
        print(
            f"    prefill {cost.prefill_base_ms:.2f} ms/chunk + {cost.prefill_ms_per_token:.4f} "
            f"ms/token, {corrected('prefill')}"
        )
    if "D" in stages:
        print(
            f"    decode  {cost.decode_base_ms:.2f} ms/step + {cost.decode_ms_per_seq:.4f} ms/seq "
            f"+ {cost.decode_ms_per_context_token:.6f} ms/context token, {corrected('decode')}"
        )
    if cost.HasField("max_num_batched_tokens"):
        print(
            f"    budgets {cost.max_num_batched_tokens} tokens/step, "
            f"{cost.max_encode_images} images/encode turn"
        )
    else:
        print("    budgets: not profiled (prior cost model)")


def _print_trace(trace) -> None:
    print(f"request {trace.request_id} ({trace.model}): {trace.state}")
    for event in trace.events:
        extra = []
        if event.duration_ms:
            extra.append(f"{event.duration_ms:.1f} ms")
        if event.bytes:
            extra.append(f"{event.bytes} B")
        if event.detail:
            extra.append(event.detail)
        where = f" @{event.worker_id}" if event.worker_id else ""
        print(f"  {event.time_ms:9.1f} ms  {event.event}{where}  {', '.join(extra)}")
