"""The files of a run, under one prefix (`--out bench/results/agent_small_cpu`):

    PREFIX.json            settings, cluster, machine, summary and every run's record
    PREFIX.md              the report (report.py)
    PREFIX_ftr_cdf.png     FTR and E2E CDFs per layout (plots.py)
    PREFIX_ablation.png    FTR and E2E per layout, against the controller

Rebuilding the report and plots from a PREFIX.json (after editing report.py, say) needs no
rerun:
    python -c "from bench.agent.results import rewrite; rewrite('bench/results/agent_small_cpu')"
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.agent.plots import ablation_plot, cdf_plot
from bench.agent.report import markdown_report, summarize
from bench.common.output import write_json


def write_results(results: dict, prefix: Path | None) -> str:
    """The markdown; every file too when `prefix` is given."""
    markdown = markdown_report(results)
    if prefix is not None:
        prefix = Path(prefix)
        write_json(prefix.with_name(prefix.name + ".json"), results)
        prefix.with_name(prefix.name + ".md").write_text(markdown)
        cdf_plot(results["records"], prefix.with_name(prefix.name + "_ftr_cdf.png"))
        ablation_plot(
            results["summary"]["layouts"], prefix.with_name(prefix.name + "_ablation.png")
        )
    return markdown


def rewrite(prefix: str | Path) -> str:
    """The summary, report and plots again, from PREFIX.json."""
    prefix = Path(prefix)
    results = json.loads(prefix.with_name(prefix.name + ".json").read_text())
    results["summary"] = summarize(results["records"], results["cluster"]["model"])
    return write_results(results, prefix)
