"""The overhead benchmark's results as markdown tables."""

from __future__ import annotations

from bench.common.output import table_row
from scheduler.trace_breakdown import STAGES

PARTS = ("compute", "queue", "transfer", "other")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _size(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "n/a"
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 2**10:.0f} KiB"


def _gbps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def breakdown_table(per_class: dict) -> list[str]:
    lines = [
        "| Class | n | e2e p50 / p90 ms | TTFT p50 ms | compute | queue | transfer | other "
        "| overhead p50 | overhead p90 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in per_class.items():
        e2e, mean_e2e = s["e2e_ms"], s["e2e_ms"]["mean"]
        parts = []
        for part in PARTS:
            mean = s["breakdown_ms"][part]["mean"]
            parts.append(f"{_ms(mean)} ({_pct(mean / mean_e2e if mean_e2e else None)})")
        overhead = s["overhead_fraction"]
        lines.append(
            table_row(
                [
                    name,
                    s["num_requests"],
                    f"{_ms(e2e['p50'])} / {_ms(e2e['p90'])}",
                    _ms(s["ttft_ms"]["p50"]),
                    *parts,
                    _pct(overhead["p50"]),
                    _pct(overhead["p90"]),
                ]
            )
        )
    return lines


def stage_table(per_class: dict) -> list[str]:
    head = [f"{stage} compute / queue" for stage in STAGES]
    lines = [
        table_row(["Class (mean ms)", *head, "embedding / KV transfer", "outside the scheduler"]),
        "|---|" + "---|" * (len(STAGES) + 2),
    ]
    for name, s in per_class.items():
        compute, queue = s["compute_ms_by_stage"], s["queue_ms_by_stage"]
        cells = [f"{_ms(compute[st]['mean'])} / {_ms(queue[st]['mean'])}" for st in STAGES]
        transfer = s["transfer_ms_by_kind"]
        transfers = f"{_ms(transfer['embedding']['mean'])} / {_ms(transfer['kv']['mean'])}"
        lines.append(table_row([name, *cells, transfers, _ms(s["outside_scheduler_ms"]["mean"])]))
    return lines


def bandwidth_table(results: dict) -> list[str]:
    handoff, memcpy = results["handoff"], results["memcpy_gbps"]
    traces, direct = handoff["traces_kv"], handoff["object_store"]
    kv_bytes = [s["kv_bytes"]["p50"] for s in results["per_class"].values()]
    rows = [
        ("memcpy in this process (np.copyto)", _size(handoff["memcpy"]["bytes"]), memcpy),
        (
            "KV handoff from traces (kv_transfer: fetch + verify)",
            " / ".join(_size(b) for b in kv_bytes) + " (p50 per class)",
            traces["p50"],
        ),
        ("object store, fetch + verify (= trace's kv_transfer)", _size(direct["bytes"]),
         direct["fetch_gbps"]),
        ("object store, put (copy in + checksum)", _size(direct["bytes"]), direct["put_gbps"]),
        ("object store, put + fetch (whole handoff)", _size(direct["bytes"]),
         direct["put_fetch_gbps"]),
        ("checksum alone (the verify in put and fetch)", _size(direct["bytes"]),
         direct["checksum_gbps"]),
        ("object store, fetch less its checksum (derived)", _size(direct["bytes"]),
         direct["fetch_without_checksum_gbps"]),
    ]  # fmt: skip
    lines = ["| Path | bytes | GB/s (median) | vs memcpy |", "|---|---|---|---|"]
    for label, size, gbps in rows:
        ratio = f"{gbps / memcpy:.2f}" if gbps else "n/a"
        lines.append(table_row([label, size, _gbps(gbps), ratio]))
    return lines


def target_table(results: dict) -> list[str]:
    lines = ["| Target | measured | target | met |", "|---|---|---|---|"]
    for name, t in results["targets"].items():
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        label = f"{name} ({t['class']})" if "class" in t else name
        lines.append(table_row([label, value, t["target"], "yes" if t["met"] else "NO"]))
    return lines


def notes(results: dict) -> list[str]:
    out = [
        f"- GB/s = {results['gbps_definition']}. The memcpy moves each byte once (read + write "
        "bandwidth is twice the figure).",
        "- overhead = (e2e - engine compute) / e2e; e2e and TTFT are the client's (send to last "
        "/ first token). Component columns are means (they add up to the mean e2e) with their "
        "share of it; 'other' = ingress, scheduler and Ray hops.",
    ]
    for name, s in results["per_class"].items():
        if s["missing_attributes"]:
            missing = ", ".join(f"{k} x{n}" for k, n in sorted(s["missing_attributes"].items()))
            out.append(f"- {name}: trace attributes missing (counted as 0): {missing}.")
        if s["cached_prompt_tokens"]:
            out.append(f"- {name}: {s['cached_prompt_tokens']} prompt tokens hit the prefix cache.")
    return out


def markdown_report(results: dict) -> str:
    config, machine = results["config"], results["machine"]
    title = (
        f"## Coordination overhead: {config['preset']} preset, pools {config['pools']}, "
        f"{config['requests_per_class']} requests per class, one at a time"
    )
    machine_line = (
        f"Machine: {machine['cpu_model']}, {machine['num_cpus']} CPUs, torch "
        f"{machine['torch']}, ray {machine['ray']}, Python {machine['python']}. "
        f"Runtime {results['runtime_s']:.0f} s."
    )
    sections = [
        [title, "", machine_line],
        breakdown_table(results["per_class"]),
        stage_table(results["per_class"]),
        bandwidth_table(results),
        target_table(results),
        notes(results),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
