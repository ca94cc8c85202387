"""PNG plots of a run (matplotlib, no display needed):

ftr_cdf.png    FTR and E2E CDFs, one line per layout (log time axis)
ablation.png   FTR p50, E2E p50 and E2E p99 per layout, bars side by side, the controller's
               dashed across: what turning each mechanism off costs (failed runs, left out
               of the bars, are counted under the layout's name)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cdf_plot(records_by_layout: dict[str, list[dict]], path: Path) -> None:
    from matplotlib.ticker import NullFormatter

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), sharey=True)
    for ax, key, title in ((axes[0], "ftr_ms", "FTR"), (axes[1], "e2e_ms", "E2E")):
        for layout, records in records_by_layout.items():
            values = np.sort([r[key] for r in records if r["status"] == "ok" and r[key]])
            if len(values):
                ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post",
                        label=layout)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title} of each run, per layout", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CDF")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ablation_plot(layouts: dict[str, dict], path: Path) -> None:
    """`layouts`: the summary's per-layout figures."""
    plt = _pyplot()
    names = list(layouts)
    figures = (("FTR p50", "ftr_ms", "p50"), ("E2E p50", "e2e_ms", "p50"),
               ("E2E p99", "e2e_ms", "p99"))  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6.4, 1.3 * len(names)), 4.2))
    width = 0.8 / len(figures)
    x = np.arange(len(names))
    for i, (label, key, point) in enumerate(figures):
        values = [(layouts[n][key][point] or 0.0) / 1000.0 for n in names]
        bars = ax.bar(x + (i - (len(figures) - 1) / 2) * width, values, width, label=label)
        controller = layouts.get("controller")
        if controller and controller[key][point]:
            ax.axhline(controller[key][point] / 1000.0, color=bars.patches[0].get_facecolor(),
                       ls="--", lw=1)  # fmt: skip
    labels = [
        f"{n}\n({layouts[n]['num_failed']} failed)" if layouts[n]["num_failed"] else n
        for n in names
    ]
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_ylabel("seconds")
    ax.set_title("Per layout; dashed: the controller with every mechanism on", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
