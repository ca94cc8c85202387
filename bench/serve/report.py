"""results.json -> summary.md: the comparisons first, then attainment per layout and rate, then
one table per layout and point (overall and per workload kind), then where the time went."""

from __future__ import annotations

from bench.common.output import table_row
from bench.serve.comparison import REJECT_LATENCY_TARGET_MS
from bench.serve.mix import format_mix
from scheduler.slo import GOODPUT_ATTAINMENT


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:g} req/s"


def _dist(stats: dict, keys=("mean", "p50", "p90", "p99")) -> str:
    return " / ".join(_ms(stats[k]) for k in keys)


def header(results: dict) -> list[str]:
    c, m, model = results["config"], results["machine"], results["model"]
    targets = ", ".join(
        f"{name} {t[0]:g} / {t[1]:g}" for name, t in results["slo_targets_ms"].items()
    )
    th = results["class_thresholds"]
    arrival = c["arrival"] + (f" (cv {c['burstiness']:g})" if c["arrival"] == "gamma" else "")
    if c["arrival"] == "trace":
        arrival += f" {c['trace']}"
    device = m["gpu_name"] or m["cpu_model"]
    images = (
        f"multi_image {c['multi_images'][0]}-{c['multi_images'][1]} images, video "
        f"{c['video_frames'][0]}-{c['video_frames'][1]} frames (at most "
        f"{model['max_images_per_request']} images fit the context); reuse fraction "
        f"{c['reuse_fraction']:g}"
    )
    requests = f"mix {format_mix(c['mix'])}"
    if c["arrival"] == "trace":
        requests = "lengths and image counts from the trace, clamped to the ranges below"
        images = f"at most {model['max_images_per_request']} images per request"
    return [
        f"## Serving benchmark: {c['preset']} preset, {c['workers']} workers per layout, "
        f"{c['torch_threads']} torch thread(s) each, {c['device']}",
        "",
        f"Machine: {device}, {m['num_cpus']} CPUs, torch {m['torch']}, ray {m['ray']}, Python "
        f"{m['python']}. Runtime {results['runtime_s']:.0f} s. Model: {model['num_image_tokens']}"
        f" tokens per image, context {model['max_model_len']}.",
        "",
        f"Workload: {requests}; arrivals {arrival}; prompt text "
        f"{c['prompt_tokens'][0]}-{c['prompt_tokens'][1]} tokens, output "
        f"{c['output_tokens'][0]}-{c['output_tokens'][1]} tokens (EOS ignored, greedy); "
        f"{images}; {c['prompt_format']} prompts; seed {c['seed']}.",
        "",
        f"SLO targets, TTFT / TPOT ms: {targets}"
        + (" (overridden by --ttft-ms/--tpot-ms)" if c["ttft_ms"] or c["tpot_ms"] else "")
        + f". Rock: >= {th['rock_min_images']} images, an image >= "
        f"{th['rock_min_image_pixels']:,} pixels, or >= {th['rock_min_prompt_tokens']} prompt "
        "tokens; pebble: other requests with images; sand: text.",
    ]


def comparisons(results: dict) -> list[str]:
    comp = results["comparisons"]
    lines = ["### Comparisons", ""]
    text = comp["text_ttft"]
    if text is None:
        lines.append("- Text TTFT: needs both colocated-fcfs and disagg-slo in --layouts.")
    else:
        ratio = text["candidate_over_baseline"]
        where = (
            "the highest rate where it attains 90 %"
            if text["baseline_attains"]
            else ("the lowest rate (it never attains 90 %)")
        )
        lines.append(
            f"- p90 TTFT of text requests at {_rate(text['rate'])} ({where} for "
            f"{text['baseline']}): {text['candidate']} {_ms(text['candidate_p90_ms'])} ms vs "
            f"{text['baseline']} {_ms(text['baseline_p90_ms'])} ms"
            + (f" ({ratio:.2f}x)." if ratio is not None else ".")
        )
    good = comp["goodput"]
    if good is None:
        lines.append("- Goodput ratio: needs both colocated-fcfs and disagg-slo in --layouts.")
    else:
        ratio = good["ratio"]
        lines.append(
            f"- Goodput (highest rate with >= {GOODPUT_ATTAINMENT:.0%} attainment): "
            f"{good['candidate']} {_rate(good['candidate_goodput'])}, {good['baseline']} "
            f"{_rate(good['baseline_goodput'])}; ratio "
            + (f"{ratio:.2f}." if ratio is not None else "n/a (a goodput is none or missing).")
        )
    over = comp["overload"]
    if over is None:
        lines.append("- Overload: no overload point for disagg-slo.")
    else:
        if over["num_rejected"]:
            timing = (
                f"rejection latency p99 {_ms(over['reject_ms_p99'])} ms, max "
                f"{_ms(over['reject_ms_max'])} ms (target < {REJECT_LATENCY_TARGET_MS:g} ms: "
                f"{'met' if over['rejections_fast'] else 'NOT met'})"
            )
        else:
            timing = "no rejection to time"
        failed = ""
        if over["num_failed"]:
            codes = ", ".join(c for c in over["error_codes"] if c != "RESOURCE_EXHAUSTED")
            failed = f", {over['num_failed']} failed ({codes or 'timed out'})"
        lines.append(
            f"- Overload at {_rate(over['rate'])} on {over['layout']}: {over['num_rejected']} of "
            f"{over['num_requests']} rejected{failed}; admitted attainment "
            f"{_pct(over['admitted_attainment'])} (target >= {GOODPUT_ATTAINMENT:.0%}: "
            f"{'met' if over['admitted_attains'] else 'NOT met'}); {timing}. "
            f"Check {'PASSED' if over['passed'] else 'FAILED'}."
        )
    return lines


def attainment_table(results: dict) -> list[str]:
    rates = [p["rate"] for p in results["points"] if p["kind"] == "sweep"]
    over = [p for p in results["points"] if p["kind"] == "overload"]
    head = [f"{r:g} req/s" for r in rates] + [f"overload {p['rate']:g}" for p in over]
    lines = [
        "### SLO attainment (all requests; admitted only, in brackets, where some were rejected)",
        "",
        table_row(["Layout", *head, "goodput"]),
        table_row(["---"] * (len(head) + 2)),
    ]
    for name, layout in results["layouts"].items():
        points = {p["rate"]: p for p in layout["sweep"]}
        cells = [_attain(points.get(rate)) for rate in rates]
        cells += [_attain(layout["overload"])] if over else []
        goodput = _rate(layout["goodput"]) + (" (error)" if layout["error"] else "")
        lines.append(table_row([name, *cells, goodput]))
    return lines


def _attain(point: dict | None) -> str:
    if point is None:
        return "-"
    s = point["summary"]
    text = _pct(s["attainment"])
    return text + (f" [{_pct(s['admitted_attainment'])}]" if s["num_rejected"] else "")


def point_table(point: dict) -> list[str]:
    s = point["summary"]
    offered = point["offered_rate"]
    lines = [
        f"**{point['point']}** ({point['num_requests']} requests, offered "
        f"{offered:.2f} req/s, wall {point['wall_s']:.0f} s, "
        f"{s['output_tok_s'] or 0:,.0f} output tokens/s, client send lag p99 "
        f"{_ms(s['send_lag_ms']['p99'])} ms)"
        if offered
        else f"**{point['point']}**",
        "",
        table_row(
            [
                "Kind",
                "n",
                "ok/rej/fail",
                "attain",
                "TTFT ms mean/p50/p90/p99",
                "TPOT ms mean/p50/p90/p99",
                "ITL ms p50/p90/p99",
                "e2e ms mean/p50/p90/p99",
                "prefix hit",
                "emb. hit",
            ]
        ),  # fmt: skip
        table_row(["---"] * 10),
    ]
    for kind, g in [("all", s), *point["by_kind"].items()]:
        failed = g["num_failed"] + g["num_timeout"]
        lines.append(table_row([
            kind, g["num_requests"], f"{g['num_ok']}/{g['num_rejected']}/{failed}",
            _pct(g["attainment"]), _dist(g["ttft_ms"]), _dist(g["tpot_ms"]),
            _dist(g["itl_ms"], ("p50", "p90", "p99")), _dist(g["e2e_ms"]),
            _pct(g["prefix_cache_hit_rate"]), _pct(g["embedding_cache_hit_rate"]),
        ]))  # fmt: skip
    if s["num_rejected"]:
        r = s["reject_ms"]
        lines += ["", f"Rejected {s['num_rejected']}: status after p50 {_ms(r['p50'])} ms, p99 "
                  f"{_ms(r['p99'])} ms, max {_ms(r['max'])} ms; {s['num_retry_after_hints']} "
                  "carried a retry-after hint."]  # fmt: skip
    if s["error_codes"]:
        lines += ["", f"Error statuses: {', '.join(s['error_codes'])}."]
    return lines


def stage_table(layout: dict) -> list[str]:
    lines = [
        table_row(["Point (mean ms)", "TTFT: client / at scheduler / dispatched / first token",
              "encode queue / compute", "prefill queue / compute", "decode queue / compute",
              "embedding transfer ms / KiB", "KV transfer ms / KiB"]),
        table_row(["---"] * 7),
    ]  # fmt: skip
    for point in layout["sweep"] + ([layout["overload"]] if layout["overload"] else []):
        st = point["summary"]["stages"]
        ttft = st.get("ttft_ms", {})
        milestones = ("client", "scheduler_arrival", "first_dispatch", "server_ttft")
        cells = [" / ".join(_ms(ttft.get(name)) for name in milestones)]
        cells += [f"{_ms(st['queue_ms'][s])} / {_ms(st['compute_ms'][s])}"
                  for s in ("encode", "prefill", "decode")]  # fmt: skip
        for kind in ("embedding", "kv"):
            nbytes = st["transfer_bytes"][kind]
            kib = "-" if nbytes is None else f"{nbytes / 1024:,.0f}"
            cells.append(f"{_ms(st['transfer_ms'][kind])} / {kib}")
        lines.append(table_row([point["point"], *cells]))
    return lines


def layout_sections(results: dict) -> list[str]:
    lines = []
    for name, layout in results["layouts"].items():
        started = layout.get("startup_s")
        lines += [f"### {name}: pools {', '.join(layout['pools'])}, policy {layout['policy']}"
                  + (f", started in {started:.0f} s" if started else ""), ""]  # fmt: skip
        if layout["error"]:
            lines += [f"**Error:** {layout['error']}", ""]
        for point in layout["sweep"] + ([layout["overload"]] if layout["overload"] else []):
            lines += [*point_table(point), ""]
        if layout["sweep"]:
            lines += ["Where the time went (server traces, means over requests that ran the "
                      "stage):", "", *stage_table(layout), ""]  # fmt: skip
    return lines


def _delta(first: float | None, other: float | None) -> str:
    if first is None or other is None:
        return "-"
    return f"{_ms(first)} / {_ms(other)} ({other - first:+.1f})"


def api_table(results: dict) -> list[str]:
    """The APIs side by side: a point's requests alternate over them, so both see the same load
    and caches; the difference is what the other path adds per request and per token."""
    apis = results["config"].get("apis", ["grpc"])
    if len(apis) < 2:
        return []
    first = apis[0]
    lines = [
        f"### APIs side by side: requests alternate over {', '.join(apis)} (p50 ms, {first} / "
        "other (difference))",
        "",
        "| Layout | Point | API | n | TTFT p50 | TPOT p50 | e2e p50 | attained |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, layout in results["layouts"].items():
        for point in layout["sweep"] + ([layout["overload"]] if layout["overload"] else []):
            by_api = point.get("by_api", {})
            if first not in by_api:
                continue
            b = by_api[first]
            for api in apis[1:]:
                o = by_api.get(api)
                if o is None:
                    continue
                lines.append(table_row([
                    name, point["point"], api, f"{b['num_requests']} / {o['num_requests']}",
                    *(_delta(b[k]["p50"], o[k]["p50"]) for k in ("ttft_ms", "tpot_ms", "e2e_ms")),
                    f"{_pct(b['attainment'])} / {_pct(o['attainment'])}",
                ]))  # fmt: skip
    return lines


NOTES = [
    "- TTFT: send -> first chunk with tokens; e2e: send -> last chunk (client clock). TPOT = "
    "(e2e - TTFT) / (tokens - 1). ITL: each chunk's gap to the previous one divided by its "
    "tokens, one sample per token, pooled over requests. Attainment: TTFT and TPOT within the "
    "class targets; rejected, failed and timed-out requests count as not attained.",
    "- Prefix hit: cached / prompt tokens (final usage). Embedding hit: images whose encode the "
    "trace marks skipped (`encode_skipped`) / images sent; 0 where the server records none.",
    "- TTFT: the client's (from its send), then from the ingress's arrival (trace events) until "
    "the scheduler took the request (`queued`: the ingress's build and the hop), until its first "
    "stage was dispatched to a worker (the scheduler's queue) and until its first token; means "
    "over the same requests. Client minus server TTFT: the gRPC proxy, the ingress's wait to "
    "start and the stream back.",
    "- Every layout gets the same requests at the same times; layouts run one after another on "
    "the same machine, and the client shares its CPUs (see the send lag).",
]


def run_notes(results: dict) -> list[str]:
    """What this run's numbers need said about them."""
    notes = []
    for name, layout in results["layouts"].items():
        points = layout["sweep"] + ([layout["overload"]] if layout["overload"] else [])
        mismatches = sum(p["class_mismatches"] for p in points)
        if mismatches:
            notes.append(f"- {name}: {mismatches} requests were classed otherwise by the server.")
        admissions: dict[str, int] = {}
        for point in points:
            for action, count in point["summary"]["stages"].get("admissions", {}).items():
                admissions[action] = admissions.get(action, 0) + count
        other = {k: v for k, v in admissions.items() if k not in ("admit", "unknown")}
        if other:
            listed = ", ".join(f"{v} {k}" for k, v in sorted(other.items()))
            notes.append(f"- {name}: admission decisions other than admit: {listed}.")
        if not all(point["idle_after"] for point in points):
            notes.append(f"- {name}: requests were still in flight after a point had drained.")
    return notes


def markdown_report(results: dict) -> str:
    notes = ["### Notes", "", *NOTES, *run_notes(results)]
    sections = [header(results), comparisons(results), attainment_table(results),
                api_table(results), layout_sections(results), notes]  # fmt: skip
    sections = [section for section in sections if section]
    return "\n\n".join("\n".join(section) for section in sections).rstrip() + "\n"
