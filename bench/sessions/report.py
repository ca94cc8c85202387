"""Turn records -> per-turn figures per mode, the targets, and the markdown report.

Re-prefilled history: a turn's history is the previous turn's prompt and answer; the part of
it not served from a cache (history - cached tokens: caches serve a prefix) was computed again.
Cached share: cached / prompt tokens, over turns 2 and later (a first turn has nothing to
reuse) and over all turns.
"""

from __future__ import annotations

from collections import defaultdict

from bench.common.output import table_row
from bench.common.stats import percentiles

FROM_TURN = 4  # the targets look at turns from this one on
TTFT_TARGET_MS = {"text": 1000.0, "image": 3000.0}  # sand and pebble defaults, per session turn 1
TARGETS = {"ttft_p50_speedup": 3.0, "reprefilled_history_ratio": 0.05, "cached_share": 0.9}


def summarize(records_by_mode: dict[str, list[dict]], pinned_by_mode: dict[str, list]) -> dict:
    modes = {}
    for mode, records in records_by_mode.items():
        modes[mode] = _mode_summary(records, pinned_by_mode.get(mode, []))
    return {"modes": modes, "targets": _targets(modes)}


def _mode_summary(records: list[dict], pinned: list) -> dict:
    by_session = defaultdict(dict)
    for r in records:
        by_session[r["session"]][r["turn"]] = r
    turns = defaultdict(list)
    for session in by_session.values():
        for number, r in session.items():
            previous = session.get(number - 1)
            history = previous["prompt_tokens"] + previous["output_tokens"] if previous else 0
            recomputed = max(0, history - r["cached_tokens"])
            turns[number].append({**r, "reprefilled_history": recomputed if previous else 0})
    per_turn = {
        number: {
            "n": sum(r["status"] == "ok" for r in rs),
            "ttft_ms": percentiles([r["ttft_ms"] for r in rs], (50, 90)),
            "prompt_tokens": _mean(r["prompt_tokens"] for r in rs),
            "cached_tokens": _mean(r["cached_tokens"] for r in rs),
            "reprefilled_history": _mean(r["reprefilled_history"] for r in rs),
        }
        for number, rs in sorted(turns.items())
    }
    late = [r for number, rs in turns.items() if number >= FROM_TURN for r in rs]
    later = [r for number, rs in turns.items() if number >= 2 for r in rs]
    every = [r for rs in turns.values() for r in rs]
    return {
        "per_turn": per_turn,
        "late_ttft_ms": percentiles([r["ttft_ms"] for r in late], (50, 90)),
        "late_reprefilled_history": sum(r["reprefilled_history"] for r in late),
        "cached_share_later_turns": _share(later),
        "cached_share_all_turns": _share(every),
        "num_failed": sum(r["status"] != "ok" for r in records),
        "sessions_attained": _sessions_attained(by_session),
        "num_sessions": len(by_session),
        "pinned_blocks_max": max((p for _, p in pinned), default=0),
        "pinned_blocks_mean": _mean(p for _, p in pinned),
        "pinned_samples": pinned,
    }


def _targets(modes: dict) -> dict:
    base, ours = modes.get("stateless"), modes.get("responses")
    if not base or not ours:
        return {}
    base_p50, ours_p50 = base["late_ttft_ms"]["p50"], ours["late_ttft_ms"]["p50"]
    speedup = base_p50 / ours_p50 if base_p50 and ours_p50 else None
    history = base["late_reprefilled_history"]
    ratio = ours["late_reprefilled_history"] / history if history else None
    measured = {
        "ttft_p50_speedup": speedup,
        "reprefilled_history_ratio": ratio,
        "cached_share": ours["cached_share_later_turns"],
    }
    met = {
        "ttft_p50_speedup": speedup is not None and speedup >= TARGETS["ttft_p50_speedup"],
        "reprefilled_history_ratio": ratio is not None
        and ratio < TARGETS["reprefilled_history_ratio"],
        "cached_share": (measured["cached_share"] or 0) >= TARGETS["cached_share"],
    }
    return {"measured": measured, "met": met}


def _sessions_attained(by_session: dict) -> int:
    """Sessions whose every turn finished within its TTFT target (an image turn: pebble's)."""
    count = 0
    for session in by_session.values():
        ok = all(
            r["status"] == "ok" and r["ttft_ms"] is not None and r["ttft_ms"] <= _target(r)
            for r in session.values()
        )
        count += ok
    return count


def _target(record: dict) -> float:
    return TTFT_TARGET_MS["image" if record.get("has_image") else "text"]


def _share(records: list[dict]) -> float | None:
    prompt = sum(r["prompt_tokens"] for r in records)
    return sum(r["cached_tokens"] for r in records) / prompt if prompt else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_report(results: dict) -> str:
    summary, config, machine = results["summary"], results["config"], results["machine"]
    shape = config["shape"]
    lines = [
        f"## Sessions: preset {config['preset']}, pools {config['pools']}, "
        f"{shape['num_sessions']} sessions x {shape['num_turns']} turns per mode, "
        f"{config['concurrency']} at a time",
        "",
        f"{machine.get('cpu_model')}; {machine.get('num_cpus')} CPUs. First turn "
        f"{shape['first_turn_words']} words ({shape['image_fraction']:.0%} with an image), "
        f"then {shape['turn_words']} words a turn, {shape['output_tokens']} output tokens "
        f"(EOS ignored, greedy); pauses log-normal, median {shape['pause_median_s']} s, "
        f"capped at {shape['pause_max_s']} s. Runtime {results['runtime_s']:.0f} s.",
        "",
        "| Mode | turn | n | TTFT p50 / p90 ms | prompt tokens | cached | re-prefilled history |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, m in summary["modes"].items():
        for number, t in m["per_turn"].items():
            ttft = f"{_num(t['ttft_ms']['p50'])} / {_num(t['ttft_ms']['p90'])}"
            lines.append(table_row([
                mode, number, t["n"], ttft, _num(t["prompt_tokens"], 0),
                _num(t["cached_tokens"], 0), _num(t["reprefilled_history"], 0),
            ]))  # fmt: skip
    lines += [
        "",
        "| Mode | TTFT p50 / p90 ms (turns >= 4) | re-prefilled history (turns >= 4) | cached "
        "share (turns >= 2 / all) | sessions attained | pinned blocks max / mean | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, m in summary["modes"].items():
        lines.append(table_row([
            mode, f"{_num(m['late_ttft_ms']['p50'])} / {_num(m['late_ttft_ms']['p90'])}",
            m["late_reprefilled_history"],
            f"{_num(_pct(m['cached_share_later_turns']), 0)} % / "
            f"{_num(_pct(m['cached_share_all_turns']), 0)} %",
            f"{m['sessions_attained']} of {m['num_sessions']}",
            f"{m['pinned_blocks_max']} / {_num(m['pinned_blocks_mean'])}", m["num_failed"],
        ]))  # fmt: skip
    targets = summary["targets"]
    if targets:
        lines += ["", "| Target (responses vs stateless) | measured | target | met |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, value in targets["measured"].items():
            goal = TARGETS[name]
            sign = "<" if name == "reprefilled_history_ratio" else ">="
            met = "yes" if targets["met"][name] else "NO"
            lines.append(table_row([name, _num(value, 3), f"{sign} {goal}", met]))
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100.0
