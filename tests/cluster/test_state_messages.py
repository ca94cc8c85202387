"""Cluster snapshots -> GetClusterState messages: cost models per worker, SLO counts per class,
finished agent runs per class."""

from __future__ import annotations

from agent.run_summary import RunSummary
from cluster.agent_metrics import AgentRunStats
from cluster.cluster_state import ClusterSnapshot, PoolSnapshot
from cluster.state_messages import cluster_state_message
from scheduler.cost_model import WorkerCostSnapshot
from scheduler.slo_ledger import SloLedger
from scheduler.snapshot import WorkerSnapshot
from workers.contract.cost_profile import DecodeCost, LinearCost


def worker(worker_id: str, stages: str) -> WorkerSnapshot:
    return WorkerSnapshot(worker_id, "pool", "tiny", stages, 1, False, None, 0)


def agent_run(status: str, ftr_ms: float | None, e2e_ms: float, engine_s: float) -> RunSummary:
    return RunSummary(
        request_class="image", status=status, ftr_ms=ftr_ms, e2e_ms=e2e_ms, budget_ms=3000.0,
        num_tool_calls=2, num_tool_cache_hits=1, tool_ms_before_ftr=250.0,
        num_prompt_tokens=400, num_cached_tokens=100, num_model_calls=2, engine_s=engine_s,
    )  # fmt: skip


def agent_stats() -> AgentRunStats:
    stats = AgentRunStats()
    stats.record(agent_run("completed", 1000.0, 2000.0, 1.5))
    stats.record(agent_run("completed", 1000.0, 4000.0, 2.5))
    stats.record(agent_run("failed", None, 100.0, 0.5))
    return stats


def snapshot(agent: AgentRunStats | None = None) -> ClusterSnapshot:
    profiled = WorkerCostSnapshot(
        LinearCost(1.5, 0.25), LinearCost(2.0, 0.125), DecodeCost(3.0, 0.5, 0.001),
        {"encode": 1.0, "prefill": 1.5, "decode": 0.75}, {"encode": 0, "prefill": 3, "decode": 9},
        512, 4,
    )  # fmt: skip
    prior = WorkerCostSnapshot(
        LinearCost(2.0, 0.2), LinearCost(2.0, 0.1), DecodeCost(2.0, 0.5, 0.0),
        {"encode": 1.0, "prefill": 1.0, "decode": 1.0}, {"encode": 0, "prefill": 0, "decode": 0},
        None, None,
    )  # fmt: skip
    ledger = SloLedger(num_prompt_tokens=300, num_cached_prompt_tokens=60)
    ledger.num_images, ledger.num_images_not_encoded = 4, 1
    sand = ledger.classes["sand"]
    sand.num_finished, sand.num_attained, sand.num_rejected = 10, 9, 2
    rock = ledger.classes["rock"]
    rock.num_degraded, rock.num_best_effort, rock.num_failed = 1, 3, 1
    pool = PoolSnapshot(
        "pd", "PD", "tiny", 3, [worker("pd-0", "PD"), worker("pd-1", "PD"), worker("pd-2", "PD")],
        costs={"pd-0": profiled, "pd-1": prior},  # pd-2: the scheduler has lost it
    )  # fmt: skip
    return ClusterSnapshot(
        [pool], {"queued": 1, "decoding": 2, "finished": 10},
        num_queued_by_stage={"encode": 0, "prefill": 1, "decode": 0}, ledger=ledger,
        agent=(agent or AgentRunStats()).snapshot(),
    )  # fmt: skip


def test_each_worker_shows_its_cost_model_and_step_budgets():
    message = cluster_state_message(snapshot())
    profiled, prior, lost = message.pools[0].workers

    cost = profiled.cost_model
    assert (cost.encode_base_ms, cost.encode_ms_per_image_token) == (1.5, 0.25)
    assert (cost.prefill_base_ms, cost.prefill_ms_per_token) == (2.0, 0.125)
    assert (cost.decode_base_ms, cost.decode_ms_per_seq) == (3.0, 0.5)
    assert cost.decode_ms_per_context_token == 0.001
    assert dict(cost.corrections) == {"encode": 1.0, "prefill": 1.5, "decode": 0.75}
    assert dict(cost.num_observations) == {"encode": 0, "prefill": 3, "decode": 9}
    assert (cost.max_num_batched_tokens, cost.max_encode_images) == (512, 4)
    assert not prior.cost_model.HasField("max_num_batched_tokens")  # it did not profile
    assert not lost.HasField("cost_model")


def test_slo_counts_per_class_hit_rates_and_stage_queues():
    message = cluster_state_message(snapshot())

    classes = {row.request_class: row for row in message.classes}
    assert list(classes) == ["sand", "pebble", "rock"]
    sand, rock = classes["sand"], classes["rock"]
    assert (sand.finished, sand.attained, sand.rejected) == (10, 9, 2)
    assert (rock.degraded, rock.best_effort, rock.failed, rock.finished) == (1, 3, 1, 0)
    assert message.prefix_hit_rate == 0.2
    assert message.embedding_hit_rate == 0.25
    assert dict(message.queued_by_stage) == {"encode": 0, "prefill": 1, "decode": 0}
    assert message.requests_in_flight == 3


def test_status_prints_a_class_table_and_each_workers_cost_model(capsys):
    from cluster.commands import _print_state

    _print_state(cluster_state_message(snapshot()))
    out = capsys.readouterr().out

    assert "scheduler queues: decode 0, encode 0, prefill 1" in out
    assert "cache hits: prefix 20.0% of prompt tokens, embeddings 25.0% of images" in out
    sand_row = next(line for line in out.splitlines() if line.startswith("sand"))
    assert sand_row.split() == ["sand", "10", "9", "2", "0", "0", "0", "0", "90.0%"]
    assert "prefill 2.00 ms/chunk + 0.1250 ms/token, x1.50 from 3 jobs" in out
    assert "budgets 512 tokens/step, 4 images/encode turn" in out
    assert "budgets: not profiled" in out


def test_agent_runs_show_per_class_then_overall_with_unmeasured_figures_unset():
    message = cluster_state_message(snapshot(agent_stats()))

    image, overall = message.agent
    assert (image.request_class, overall.request_class) == ("image", "all")
    assert (image.runs, image.completed, image.failed, image.within_budget) == (3, 2, 1, 1)
    assert (image.ftr_p50_ms, image.e2e_p50_ms, image.e2e_p99_ms) == (1000.0, 3000.0, 3980.0)
    assert (image.tool_calls_per_run, image.tool_share_of_ftr) == (2.0, 0.25)
    assert (image.tool_cache_hit_rate, image.cached_share) == (0.5, 0.25)
    assert (image.reprefilled_tokens, image.cost_per_successful_run_s) == (900, 2.0)
    failed_only = AgentRunStats()
    failed_only.record(agent_run("failed", None, 100.0, 0.5))
    (row, _) = cluster_state_message(snapshot(failed_only)).agent
    assert not row.HasField("ftr_p50_ms")
    assert not row.HasField("cost_per_successful_run_s")
    assert row.HasField("cached_share")


def test_status_prints_agent_runs_only_once_there_are_some(capsys):
    from cluster.commands import _print_state

    _print_state(cluster_state_message(snapshot()))
    assert "agent runs" not in capsys.readouterr().out

    _print_state(cluster_state_message(snapshot(agent_stats())))
    lines = capsys.readouterr().out.splitlines()

    header = lines.index(next(line for line in lines if line.startswith("agent runs")))
    assert lines[header + 1] == (
        "  image: 3 runs, 2 completed (1 within budget), 0 incomplete, 1 failed, 0 cancelled"
    )
    assert lines[header + 2] == (
        "    FTR 1.00/1.00/1.00, E2E 3.00/3.80/3.98, 2.00 engine-s per completed run"
    )
    assert lines[header + 3] == (
        "    tools 2.00 calls/run (50.0% cached), 25.0% of FTR; "
        "prompt tokens 25.0% cached (900 reprefilled)"
    )
    assert lines[header + 4].startswith("  all: 3 runs")
