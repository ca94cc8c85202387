"""Serving benchmark: Triserve layouts side by side under the same open-loop load.

    python -m bench.serve [--preset tiny|small] [--layouts ...] [--rates 2,4,8] [--quick] ...

It starts each layout's cluster itself (one at a time, in one Ray session), sends every sweep
point's requests through the public client SDK at their arrival times, reads each request's
trace, and writes summary.md, results.json and plots to bench/results/serve_<preset>_<device>/.

    cli.py          flags and the config file -> settings.py (BenchSettings)
    layouts.py      colocated-fcfs, disagg-fcfs, disagg-slo -> ClusterConfig
    mix.py          workload kinds and the mix (classes: the scheduler's classify)
    arrivals.py     poisson, gamma and trace arrival times;  trace_files.py: Mooncake, Azure
    images.py       synthetic photos, documents and video frames (pillow)
    workload.py     the requests of a point;  points.py: the sweep points of a run
    loadgen.py      send a point, record chunks and errors, read traces -> record.py
                    (traces through scheduler/trace_breakdown.py, as every benchmark)
    metrics.py      percentiles, attainment, cache hit rates, goodput
    comparison.py   SLO layout vs the colocated baseline; the overload check
    sweep.py        layouts x points, clusters started and stopped
    report.py, plots.py, output.py, progress.py
Cluster start-up, percentiles and the machine's description are shared: bench/common/.
"""
