"""The fault benchmark's results as markdown."""

from __future__ import annotations

from bench.common.output import table_row

KILLS = ("kill_decode", "kill_prefill", "kill_encode")


def _seconds(value: float | None) -> str:
    return "not back" if value is None else f"{value:.1f} s"


def kill_table(scenarios: dict) -> list[str]:
    lines = [
        "| Scenario | fault | streams | re-driven | failed | tokens lost | duplicated | wrong "
        "| capacity back |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in KILLS:
        s = scenarios[name]
        cells = [name, f"kill -9 {s['killed']}", s["num_streams"], s["num_redriven"]]
        cells += [s["num_failed"], s["num_lost_tokens"]]
        cells += [s["num_duplicated_tokens"], s["num_wrong_tokens"]]
        lines.append(table_row([*cells, _seconds(s["seconds_to_capacity"])]))
    c = scenarios["corrupt_kv"]
    cells = ["corrupt_kv", f"{c['corrupted_per_prefill_worker']} exports per prefill worker"]
    cells += [c["num_streams"], c["num_redriven"], c["num_failed"], c["num_lost_tokens"]]
    lines.append(table_row([*cells, c["num_duplicated_tokens"], c["num_wrong_tokens"], "-"]))
    errors = [e for name in (*KILLS, "corrupt_kv") for e in scenarios[name]["errors"]]
    if errors:
        lines += ["", "Failed streams: " + "; ".join(errors[:8])]
    return lines


def cancel_table(cancels: dict) -> list[str]:
    lines = [
        "| Way | streams | cancelled | ran to the limit "
        "| server tokens past the client's: p50 / max |",
        "|---|---|---|---|---|",
    ]
    for way, s in cancels["by_way"].items():
        beyond = f"{s['server_tokens_beyond_client_p50']} / {s['server_tokens_beyond_client_max']}"
        lines.append(table_row([way, s["streams"], s["cancelled"], s["ran_to_limit"], beyond]))
    idle = cancels["seconds_until_workers_idle"]
    lines += ["", f"Every worker idle {_seconds(idle)} after the last stream left."]
    return lines


def storm_table(storm: dict) -> list[str]:
    lines = ["| Kind | statuses | slowest |", "|---|---|---|"]
    for kind, s in storm["by_kind"].items():
        statuses = ", ".join(f"{status} x{n}" for status, n in sorted(s["statuses"].items()))
        lines.append(table_row([kind, statuses, f"{s['max_s'] * 1000:.0f} ms"]))
    lines += [
        "",
        f"{storm['calls']} calls: {storm['unknown_or_internal']} UNKNOWN or INTERNAL, "
        f"{storm['leaking_internals']} with internals in their details; the well-formed call "
        f"after them: {storm['control']['status']}.",
    ]
    return lines


def markdown_report(results: dict) -> str:
    scenarios, machine = results["scenarios"], results["machine"]
    config = results["config"]
    lines = [
        f"## Fault benchmark: {config['preset']} preset, pools {config['pools']}",
        "",
        f"Machine: {machine['cpu_model']}, {machine['num_cpus']} CPUs, torch {machine['torch']}, "
        f"ray {machine.get('ray')}, Python {machine['python']}. Runtime "
        f"{results['runtime_s']:.0f} s.",
        "",
        "### Targets",
        "",
        "| Target | value | wanted | met |",
        "|---|---|---|---|",
    ]
    for name, t in results["targets"].items():
        lines.append(table_row([name, t["value"], t["target"], "yes" if t["met"] else "**no**"]))
    lines += [
        "",
        "### Killed workers and corrupt handoffs, under streams",
        "",
        *kill_table(scenarios),
    ]
    lines += ["", "### Clients that leave", "", *cancel_table(scenarios["cancels"])]
    lines += ["", "### Malformed calls", "", *storm_table(scenarios["storm"])]
    admitted = scenarios["idle_admission"]
    lines += ["", f"Idle cluster after all of it, a plain request: {admitted['status']}.", ""]
    return "\n".join(lines)
