"""Agent benchmark: what the server-side agent controller saves over a client's tool loop, and
what each of its mechanisms is worth (`python -m bench.agent`).

    benchmark.py    flags, the cluster (two models), the demo MCP tools, the interleaved runs
    workload.py     seeded runs by class (seed 001 §9): text, image, OCR, image set, video,
                    retrieval; their tools, tool-call limit and latency budget
    layouts.py      the layouts: the client loop, the controller, one ablation per mechanism
    harness.py      the clients every driver uses, and reading back the server's traces
    client_loop.py  layout 1: chat completions and tools called by the client, one by one
    controller.py   layouts 2-6: one Responses call with MCP tools, run by the controller
    record.py       what one run measured
    report.py       per-layout and per-class figures, ratios, targets, the markdown
    plots.py        FTR/E2E CDFs and the ablation bars (PNG)
    results.py      the files of a run: JSON, markdown, plots
"""
