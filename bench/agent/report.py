"""Run records -> per-layout and per-class figures, ratios, targets, and the markdown report.

Per layout (seed 001 §9's protocol): FTR and E2E p50/p90/p99; tool share of FTR (the wall
time a tool ran before the answer's first token, over FTR, both summed over runs); tool calls
per run; cached share of prompt tokens; cost (engine-seconds) per run and per run completed
within budget; the share within budget (answered, and done by the budget); p99 of E2E / budget.
Ratios read against layout 1 (client) and, for the ablations, against the controller with every
mechanism on, in the same run. Failed runs are counted, and left out of every other figure.
Partial runs are those the controller ended early (incomplete for a reason other than the
answer's token limit, which every answer reaches: EOS is ignored); runs without an answer are
counted apart, and have no FTR.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from bench.common.output import table_row
from bench.common.stats import percentiles

POINTS = (50, 90, 99)
ANSWER_LIMIT = "max_output_tokens"  # the incomplete reason of an answer that ran to its limit
_RATIO_KEYS = ("ftr_p50", "ftr_p90", "e2e_p50", "e2e_p99", "engine_s_per_run")
TARGETS = {"ftr_p50_speedup": 2.0, "ftr_p50_speedup_moonshot": 3.0, "e2e_p99_over_budget": 1.10}


def summarize(records_by_layout: dict[str, list[dict]], model: str) -> dict:
    layouts = {layout: _figures(records, model) for layout, records in records_by_layout.items()}
    per_class = {
        layout: {kind: _figures(rs, model) for kind, rs in sorted(_by_kind(records).items())}
        for layout, records in records_by_layout.items()
    }
    return {
        "layouts": layouts,
        "per_class": per_class,
        "vs_client": {name: _ratios(layouts.get("client"), f) for name, f in layouts.items()},
        "vs_controller": {
            name: _ratios(layouts.get("controller"), f, inverse=True)
            for name, f in layouts.items()
            if name.startswith("no-")
        },
        "targets": _targets(layouts),
    }


def _figures(records: list[dict], model: str) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    ftr_total = sum(r["ftr_ms"] or 0.0 for r in ok)
    prompt = sum(r["prompt_tokens"] for r in ok)
    models = [m for r in ok for m in r["models"]]
    costs = [r["engine_s"] for r in ok if r["engine_s"] is not None]
    within = [r for r in ok if r["ftr_ms"] is not None and r["e2e_ms"] <= r["budget_ms"]]
    return {
        "num_runs": len(records),
        "num_failed": len(records) - len(ok),
        "num_partial": sum(_is_partial(r) for r in ok),
        "num_without_answer": sum(r["ftr_ms"] is None for r in ok),
        "ftr_ms": percentiles((r["ftr_ms"] for r in ok), POINTS),
        "e2e_ms": percentiles((r["e2e_ms"] for r in ok), POINTS),
        "e2e_over_budget": percentiles((r["e2e_ms"] / r["budget_ms"] for r in ok), POINTS),
        "tool_ms_before_ftr": _mean(r["tool_ms_before_ftr"] for r in ok),
        "tool_share_of_ftr": sum(r["tool_ms_before_ftr"] for r in ok) / ftr_total
        if ftr_total
        else None,
        "tool_calls_per_run": _mean(r["num_tool_calls"] for r in ok),
        "tool_errors_per_run": _mean(r["num_tool_errors"] for r in ok),
        "cached_tool_call_share": _ratio(
            sum(r["num_cached_tool_calls"] for r in ok), sum(r["num_tool_calls"] for r in ok)
        ),
        "model_calls_per_run": _mean(r["num_model_calls"] for r in ok),
        "cached_share": _ratio(sum(r["cached_tokens"] for r in ok), prompt),
        "prompt_tokens_per_run": _mean(r["prompt_tokens"] for r in ok),
        "engine_s_per_run": _mean(costs),
        "engine_s_per_run_within_budget": _ratio(sum(costs), len(within)),
        "within_budget_share": _ratio(len(within), len(records)),
        "routed_away_share": _ratio(sum(m not in ("", model) for m in models), len(models)),
        "stop_reasons": dict(Counter(str(r["stop_reason"]) for r in ok if r["stop_reason"])),
        "tool_decisions": dict(Counter(d for r in ok for d in r["tool_decisions"])),
    }


def _ratios(base: dict | None, figures: dict, inverse: bool = False) -> dict:
    """base / figures (a speed-up) per headline figure; `inverse`: figures / base (what turning
    a mechanism off costs)."""
    if not base:
        return {}
    pairs = {
        "ftr_p50": (base["ftr_ms"]["p50"], figures["ftr_ms"]["p50"]),
        "ftr_p90": (base["ftr_ms"]["p90"], figures["ftr_ms"]["p90"]),
        "e2e_p50": (base["e2e_ms"]["p50"], figures["e2e_ms"]["p50"]),
        "e2e_p99": (base["e2e_ms"]["p99"], figures["e2e_ms"]["p99"]),
        "engine_s_per_run": (base["engine_s_per_run"], figures["engine_s_per_run"]),
    }
    return {name: (_ratio(b, f) if not inverse else _ratio(f, b)) for name, (b, f) in pairs.items()}


def _targets(layouts: dict) -> dict:
    client, ours = layouts.get("client"), layouts.get("controller")
    if not client or not ours:
        return {}
    speedup = _ratio(client["ftr_ms"]["p50"], ours["ftr_ms"]["p50"])
    over = ours["e2e_over_budget"]["p99"]
    measured = {"ftr_p50_speedup": speedup, "ftr_p50_speedup_moonshot": speedup,
                "e2e_p99_over_budget": over}  # fmt: skip
    met = {
        name: value is not None
        and (value <= TARGETS[name] if name == "e2e_p99_over_budget" else value >= TARGETS[name])
        for name, value in measured.items()
    }
    return {"measured": measured, "met": met}


def _is_partial(record: dict) -> bool:
    reason = record["incomplete_reason"]
    return record["response_status"] == "incomplete" and reason not in (None, ANSWER_LIMIT)


def _by_kind(records: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in records:
        groups[r["kind"]].append(r)
    return groups


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _ratio(numerator, denominator) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _times(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def _p(figure: dict) -> str:
    return " / ".join(_num(figure[f"p{p}"]) for p in POINTS)


def markdown_report(results: dict) -> str:
    summary, config, machine = results["summary"], results["config"], results["machine"]
    shape, served = config["shape"], results["cluster"]
    lines = [
        f"## Agent runs: preset {config['preset']}, {shape['num_runs']} runs per layout, "
        f"{config['concurrency']} at a time, layouts interleaved run by run",
        "",
        f"{machine.get('cpu_model')}; {machine.get('num_cpus')} CPUs. Models served: "
        f"{served['models']} (runs start on {served['model']}; the controller may route among "
        f"{served['candidate_models']}). Classes {', '.join(shape['kinds'])}; final answer "
        f"{shape['output_tokens']} tokens (EOS ignored, greedy). Demo MCP tools, latency scale "
        f"{config['latency_scale']}, seed {config['seed']}. Runtime {results['runtime_s']:.0f} s.",
        "",
        "| Layout | runs (failed / partial / no answer) | FTR p50 / p90 / p99 ms "
        "| E2E p50 / p90 / p99 ms | tool share of FTR | tool calls / run | cached prompt share "
        "| engine-s / run | engine-s / run within budget | within budget | E2E/budget p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in summary["layouts"].items():
        lines.append(table_row([
            name, f"{f['num_runs']} ({f['num_failed']} / {f['num_partial']} / "
            f"{f['num_without_answer']})",
            _p(f["ftr_ms"]), _p(f["e2e_ms"]), _pct(f["tool_share_of_ftr"]),
            _num(f["tool_calls_per_run"], 2), _pct(f["cached_share"]),
            _num(f["engine_s_per_run"], 2), _num(f["engine_s_per_run_within_budget"], 2),
            _pct(f["within_budget_share"]), _num(f["e2e_over_budget"]["p99"], 2),
        ]))  # fmt: skip
    lines += ["", "| Layout vs client (speed-up: client / layout) | FTR p50 | FTR p90 | E2E p50 "
              "| E2E p99 | engine-s / run |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in summary["vs_client"].items():
        if r and name != "client":
            lines.append(table_row([name, *(_times(r[k]) for k in _RATIO_KEYS)]))
    if summary["vs_controller"]:
        lines += ["", "| Ablation (cost: ablation / controller) | FTR p50 | FTR p90 | E2E p50 "
                  "| E2E p99 | engine-s / run |", "|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in summary["vs_controller"].items():
            if r:
                lines.append(table_row([name, *(_times(r[k]) for k in _RATIO_KEYS)]))
    lines += ["", "| Layout | calls routed away | stop reasons (controller's trace) "
              "| tool decisions |", "|---|---|---|---|"]  # fmt: skip
    for name, f in summary["layouts"].items():
        lines.append(table_row([
            name, _pct(f["routed_away_share"]), _counts(f["stop_reasons"]),
            _counts(f["tool_decisions"]),
        ]))  # fmt: skip
    lines += ["", "| Layout | class | runs | FTR p50 / p90 / p99 ms | E2E p50 / p90 / p99 ms "
              "| tool calls / run | within budget |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, classes in summary["per_class"].items():
        for kind, f in classes.items():
            lines.append(table_row([
                name, kind, f["num_runs"], _p(f["ftr_ms"]), _p(f["e2e_ms"]),
                _num(f["tool_calls_per_run"], 2), _pct(f["within_budget_share"]),
            ]))  # fmt: skip
    targets = summary["targets"]
    if targets:
        lines += ["", "| Target (controller vs client) | measured | target | met |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, value in targets["measured"].items():
            sign = "<=" if name == "e2e_p99_over_budget" else ">="
            met = "yes" if targets["met"][name] else "NO"
            lines.append(table_row([name, _num(value, 2), f"{sign} {TARGETS[name]}", met]))
    lines += ["", *results.get("notes", [])]
    return "\n".join(lines) + "\n"
