"""PNG plots of a run (matplotlib, no display needed):

attainment_vs_rate.png   SLO attainment per swept rate, one line per layout, the 90 % line
ttft_cdf.png             TTFT CDF per SLO class (columns) and rate (rows), one line per
                         layout, the class's TTFT target dashed
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scheduler.config import REQUEST_CLASSES
from scheduler.slo import GOODPUT_ATTAINMENT


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def attainment_plot(results: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, layout in results["layouts"].items():
        points = sorted(layout["sweep"], key=lambda p: p["rate"])
        rates = [p["rate"] for p in points]
        values = [100 * (p["summary"]["attainment"] or 0) for p in points]
        (line,) = ax.plot(rates, values, marker="o", label=name)
        over = layout["overload"]
        if over is not None:
            value = 100 * (over["summary"]["attainment"] or 0)
            ax.plot([over["rate"]], [value], marker="x", ms=9, ls="", color=line.get_color())
    ax.axhline(100 * GOODPUT_ATTAINMENT, color="grey", ls="--", lw=1, label="goodput threshold")
    ax.set_xlabel("request rate (req/s); x: overload point")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("SLO attainment vs request rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ttft_cdf_plot(results: dict, records: list, path: Path) -> None:
    """`records`: RequestRecords of every layout (the admitted, finished ones are plotted)."""
    from matplotlib.ticker import NullFormatter

    plt = _pyplot()
    rates = [p["rate"] for p in results["points"] if p["kind"] == "sweep"]
    classes = [c for c in REQUEST_CLASSES if any(r.slo_class == c for r in records)] or ["sand"]
    fig, axes = plt.subplots(
        len(rates), len(classes), figsize=(3.6 * len(classes), 2.6 * len(rates)), squeeze=False
    )
    targets = results["slo_targets_ms"]
    for row, rate in enumerate(rates):
        for col, slo_class in enumerate(classes):
            ax = axes[row][col]
            for name in results["layouts"]:
                ttfts = np.sort([
                    r.ttft_ms for r in records
                    if r.layout == name and r.rate == rate and r.slo_class == slo_class
                    and r.status == "ok" and not r.point.startswith("overload")
                ])  # fmt: skip
                if len(ttfts):
                    ax.step(ttfts, np.arange(1, len(ttfts) + 1) / len(ttfts), where="post",
                            label=name)  # fmt: skip
            target = results["config"]["ttft_ms"] or targets[slo_class][0]
            ax.axvline(target, color="grey", ls="--", lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{slo_class}, {rate:g} req/s", fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(rates) - 1:
                ax.set_xlabel("TTFT (ms)")
            if col == 0:
                ax.set_ylabel("CDF")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("TTFT of finished requests (rejected and failed ones left out); dashed: target")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
