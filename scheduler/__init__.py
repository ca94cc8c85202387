"""The global scheduler: request lifecycle, placement, transfer orchestration and traces.

Plain Python and asyncio: no Ray, no torch. Start at `scheduler.py`; the request lifecycle is in
`lifecycle.py`, the contract a worker must keep in `workers/contract/worker_client.py`.
"""
