"""Bandwidth of a KV handoff next to a plain memory copy, measured in the same run.

One definition for every number here:

    GB/s = payload bytes / seconds / 1e9

- memcpy: `np.copyto(dst, src)` of a 256 MiB array in this process (it reads and writes the
  bytes once each: double the figure for read+write bandwidth as in bench/engine/membw.py);
- KV handoff, from traces: kv_transfer `bytes` / `ms`, where `ms` is the decode worker's
  `ObjectStoreTransport.fetch` (map the object + epoch check + checksum of every byte);
- KV handoff, direct: a producer actor `put`s an array into Ray's object store through the same
  `ObjectStoreTransport` the workers use (copy in + checksum), a consumer actor `fetch`es it, the
  producer releases it. Reported as fetch alone (what the traces measure) and put + fetch (the
  whole handoff), plus the checksum alone (the verify inside both). Ray's call latency between
  the actors is not counted: that is coordination, already in the end-to-end breakdown.

Both sides report the median over repeats; the memcpy also reports its fastest copy.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

MEMCPY_BYTES = 256 * 2**20
HANDOFF_BYTES = 64 * 2**20  # a realistic prompt KV (small: ~25 KB per token in float32)
PRODUCER_EPOCH = 1


def _gbps(num_bytes: int, seconds: float) -> float:
    return num_bytes / seconds / 1e9


def measure_memcpy(num_bytes: int = MEMCPY_BYTES, num_repeats: int = 20) -> dict:
    src = np.ones(num_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch: page faults are not bandwidth
    times = []
    for _ in range(num_repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return {
        "bytes": num_bytes,
        "num_repeats": num_repeats,
        "gbps": _gbps(num_bytes, statistics.median(times)),
        "best_gbps": _gbps(num_bytes, min(times)),
    }


class HandoffProducer:
    """Stands in for a prefill worker: one array, put into the object store on request."""

    def __init__(self, num_bytes: int, fetch_timeout_s: float = 30.0) -> None:
        from workers.object_store_transport import ObjectStoreTransport

        self.transport = ObjectStoreTransport(fetch_timeout_s)
        rng = np.random.default_rng(0)
        self.array = rng.standard_normal(num_bytes // 4, dtype=np.float32)

    def put(self):
        """(TransferRef, put seconds)."""
        start = time.perf_counter()
        ref = self.transport.put(self.array, "bench-producer", PRODUCER_EPOCH)
        return ref, time.perf_counter() - start

    def release(self, transfer_id: str) -> bool:
        return self.transport.release(transfer_id)


class HandoffConsumer:
    """Stands in for a decode worker: fetches (and verifies) what the producer put."""

    def __init__(self, fetch_timeout_s: float = 30.0) -> None:
        from workers.object_store_transport import ObjectStoreTransport

        self.transport = ObjectStoreTransport(fetch_timeout_s)

    def fetch(self, ref) -> tuple[float, float]:
        """Seconds for `ObjectStoreTransport.fetch`, exactly as a decode worker's kv_transfer,
        and seconds for the checksum of the same bytes alone (the verify part of that fetch)."""
        from workers.transport import array_checksum

        start = time.perf_counter()
        array = self.transport.fetch(ref, PRODUCER_EPOCH)
        fetch_seconds = time.perf_counter() - start
        start = time.perf_counter()
        array_checksum(array)
        return fetch_seconds, time.perf_counter() - start


def measure_object_store_handoff(num_bytes: int = HANDOFF_BYTES, num_repeats: int = 10) -> dict:
    """Put + fetch of `num_bytes` between two fresh actors on this node (Ray must be running)."""
    import ray

    producer = ray.remote(HandoffProducer).options(num_cpus=0).remote(num_bytes)
    consumer = ray.remote(HandoffConsumer).options(num_cpus=0).remote()
    try:
        put_s, fetch_s, crc_s = [], [], []
        for repeat in range(num_repeats + 1):  # the first one warms both processes up
            ref, put_seconds = ray.get(producer.put.remote())
            fetch_seconds, crc_seconds = ray.get(consumer.fetch.remote(ref))
            ray.get(producer.release.remote(ref.transfer_id))
            del ref
            if repeat:
                put_s.append(put_seconds)
                fetch_s.append(fetch_seconds)
                crc_s.append(crc_seconds)
    finally:
        ray.kill(producer)
        ray.kill(consumer)
    put, fetch = statistics.median(put_s), statistics.median(fetch_s)
    handoff = statistics.median(p + f for p, f in zip(put_s, fetch_s, strict=True))
    crc = statistics.median(crc_s)
    return {
        "bytes": num_bytes,
        "num_repeats": num_repeats,
        "put_ms": put * 1e3,
        "fetch_ms": fetch * 1e3,
        "put_gbps": _gbps(num_bytes, put),
        "fetch_gbps": _gbps(num_bytes, fetch),
        "put_fetch_gbps": _gbps(num_bytes, handoff),
        "checksum_gbps": _gbps(num_bytes, crc),  # the verify inside fetch
        # Derived, not timed on its own: what fetch would cost without its checksum.
        "fetch_without_checksum_gbps": _gbps(num_bytes, fetch - crc) if fetch > crc else None,
    }
