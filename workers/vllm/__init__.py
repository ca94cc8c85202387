"""The vLLM engine backend: vLLM's engine in-process behind workers/engine_interface.py, and a KV
connector that moves a prompt's KV through Triserve's transport. Imported only by
workers/engine_factory.py, for a pool with `engine: vllm`."""

import os

# Before vLLM reads its environment: the engine core runs in this process (a worker actor's, one
# engine per process), and KV events carry vLLM's block hashes as they are (prefix_hashes.py).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES", "0")
