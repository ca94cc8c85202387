"""Coordination-overhead benchmark: how much of a request's time is not the model
(`python -m bench.overhead`).

    benchmark.py   flags, a cluster, the requests one at a time, the results (main)
    workload.py    seeded fresh requests and the client's clock around each
    breakdown.py   the client's e2e split into the trace's compute, queue, transfer and other
    handoff.py     KV handoff bandwidth next to a memory copy, in the same run
    report.py      the markdown tables
"""
