"""The results folder of a run:

    summary.md              the report (report.py)
    results.json            settings, machine, every summary, comparisons and raw records
    attainment_vs_rate.png  and ttft_cdf.png (plots.py)

Rebuilding the report from a results.json (after editing report.py, say) needs no rerun:
    python -c "from bench.serve.output import rewrite; rewrite('bench/results/serve_tiny_cpu')"
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.serve.comparison import compare
from bench.serve.plots import attainment_plot, ttft_cdf_plot
from bench.serve.record import RequestRecord
from bench.serve.report import markdown_report

FILES = ("summary.md", "results.json", "attainment_vs_rate.png", "ttft_cdf.png")


def _finite(value):
    """JSON has no NaN or infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def results_json(results: dict) -> str:
    """Indented, except the raw records: one line each (there are thousands)."""
    stored = {k: v for k, v in results.items() if k not in ("summary_md", "records")}
    body = json.dumps(_finite(stored), indent=1)
    records = ",\n".join(
        json.dumps(_finite(record), separators=(",", ":")) for record in results["records"]
    )
    return body[: body.rindex("}")].rstrip() + f',\n "records": [\n{records}\n ]\n}}\n'


def write_results(results: dict, out_dir: Path) -> str:
    """Write every file; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = markdown_report(results)
    (out_dir / "summary.md").write_text(summary)
    (out_dir / "results.json").write_text(results_json(results))
    records = [RequestRecord.from_dict(raw) for raw in results["records"]]
    attainment_plot(results, out_dir / "attainment_vs_rate.png")
    ttft_cdf_plot(results, records, out_dir / "ttft_cdf.png")
    return summary


def rewrite(out_dir: str | Path) -> str:
    """summary.md, the comparisons and the plots again, from the folder's results.json."""
    out_dir = Path(out_dir)
    results = json.loads((out_dir / "results.json").read_text())
    results["comparisons"] = compare(results["layouts"])
    return write_results(results, out_dir)
