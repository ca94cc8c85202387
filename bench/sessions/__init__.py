"""Multi-turn session benchmark: what keeping state between a conversation's calls saves
(`python -m bench.sessions`).

    benchmark.py   flags, the cluster, the three modes one after another, the results (main)
    workload.py    seeded sessions: turns, images in some first turns, heavy-tailed pauses
    drivers.py     one session's turns over one mode (chat stateless, chat with session_id,
                   Responses with previous_response_id), timed by the client
    report.py      per-turn tables and the targets
"""
