"""The scheduler <-> worker contract: everything that crosses that boundary, in plain Python (no
torch), so that the control plane, the ingress and the command line load none of the engine.

    messages.py         jobs, events, transfer refs and the worker's load (the wire messages)
    worker_client.py    WorkerClient: what the scheduler calls on a worker, and the rules both keep
    worker_config.py    WorkerConfig: what a worker is started with
    engine_config.py    EngineConfig: the engine part of a WorkerConfig
    cost_profile.py     a worker's measured costs and step budgets (the cost model's input)
    sampling_params.py  SamplingParams: how to pick tokens and when to stop
    block_hash.py       ImageSpan and the content hashes of full KV blocks (prefix affinity)
    images.py           decoding an ImageInput's bytes, and the image content hash
    errors.py           the errors a client's bad input raises (INVALID_ARGUMENT)
"""
