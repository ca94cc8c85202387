"""The load a worker reports. Every poll carries the cheap one: the engine's counters as of its
last turn (StageRunner.measure_load), plus the jobs still in the command queue. An explicit
`load()` adds the caches' entries, O(cache size), and the start-up profile."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from workers.command_queue import CommandQueue
from workers.contract.cost_profile import WorkerProfile
from workers.contract.messages import WorkerLoad
from workers.engine_interface import EngineInterface


def with_queued(engine_load: WorkerLoad, is_draining: bool, commands: CommandQueue) -> WorkerLoad:
    """The engine's load plus the commands it has not applied yet (under the worker's lock)."""
    return replace(
        engine_load,
        is_draining=is_draining,
        num_encode_queued=engine_load.num_encode_queued + commands.num_images,
        num_waiting=engine_load.num_waiting + commands.num_jobs,
    )


def with_cache_contents(
    load: WorkerLoad, engine: EngineInterface, profile: WorkerProfile | None
) -> WorkerLoad:
    """`load` with every embedding cache key and prefix block hash, and the profile."""
    keys, hashes = _cache_contents(engine)
    return replace(
        load,
        num_embedding_cache_entries=len(keys),
        num_prefix_cache_blocks=len(hashes),
        embedding_cache_keys=keys,
        prefix_block_hashes=[h.hex() for h in hashes],
        profile=profile,
    )


def _cache_contents(engine: EngineInterface) -> tuple[list[str], list[bytes]]:
    """Copies of the engine's cache keys, read from a caller thread. Each copy is a single
    C-level iteration under the GIL; one that overlaps a change on the engine thread raises
    RuntimeError and is taken again."""
    for _ in range(8):
        with contextlib.suppress(RuntimeError):
            hashes = engine.prefix_cache_hashes()
            return engine.embedding_cache_keys(), hashes
    return [], []
