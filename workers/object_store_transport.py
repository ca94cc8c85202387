"""Arrays through Ray's object store: the default transport between worker actors.

The producer `ray.put`s the numpy array and keeps the ObjectRef until `release`, so the object
lives at least that long. The TransferRef carries the ObjectRef inside a one-element list: Ray
resolves ObjectRefs passed as top-level arguments, not nested ones, so the ref crosses the
scheduler untouched. A consumer on the same node maps the array without a copy (read-only).
If the producer dies, its objects die with it and `fetch` fails closed with TransferError.
Ray's error text (a traceback, addresses) goes to the log; the TransferError names its class.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import ray

from workers.contract.messages import TransferRef
from workers.transport import (
    TransferError,
    Transport,
    array_checksum,
    check_epoch,
    new_transfer_id,
    verify,
)

logger = logging.getLogger(__name__)


class ObjectStoreTransport(Transport):
    def __init__(self, fetch_timeout_s: float = 30.0) -> None:
        self.fetch_timeout_s = fetch_timeout_s
        self._lock = threading.Lock()
        self._held: dict[str, tuple[str, ray.ObjectRef]] = {}  # id -> (producer id, ref)
        self._num_to_corrupt = 0  # fault injection (corrupt_next), for bench.faults

    def put(self, array: np.ndarray, producer_id: str, epoch: int) -> TransferRef:
        array = np.ascontiguousarray(array)
        checksum = array_checksum(array)
        with self._lock:
            corrupt, self._num_to_corrupt = (
                self._num_to_corrupt > 0,
                max(0, self._num_to_corrupt - 1),
            )
        if corrupt:  # what the consumer fetches differs from what the checksum says
            array = array.copy()
            array.reshape(-1).view(np.uint8)[0] ^= 0xFF
        try:
            object_ref = ray.put(array)
        except ray.exceptions.RayError as e:  # e.g. the object store is full
            logger.warning("ray.put of %d bytes failed", array.nbytes, exc_info=e)
            raise TransferError(f"cannot store {array.nbytes} bytes ({_name(e)})") from None
        ref = TransferRef(
            transfer_id=new_transfer_id(producer_id),
            handle=[object_ref],
            nbytes=array.nbytes,
            checksum=checksum,
            producer_id=producer_id,
            producer_epoch=epoch,
        )
        with self._lock:
            self._held[ref.transfer_id] = (producer_id, object_ref)
        return ref

    def fetch(self, ref: TransferRef, expected_epoch: int) -> np.ndarray:
        check_epoch(ref, expected_epoch)  # before moving any bytes
        handle = ref.handle
        if not (isinstance(handle, list) and len(handle) == 1):
            raise TransferError(f"transfer {ref.transfer_id} has no object-store handle")
        try:
            array = ray.get(handle[0], timeout=self.fetch_timeout_s)
        except ray.exceptions.RayError as e:  # lost, owner died, timed out, freed
            logger.warning("fetch of transfer %s failed", ref.transfer_id, exc_info=e)
            message = f"transfer {ref.transfer_id} cannot be fetched ({_name(e)})"
            raise TransferError(message) from None
        return verify(ref, array, expected_epoch)

    def corrupt_next(self, num_transfers: int) -> None:
        """Fault injection: the next `num_transfers` puts store bytes that fail the consumer's
        checksum (as a bad link or bad memory would). For bench.faults; nothing else calls it."""
        with self._lock:
            self._num_to_corrupt = num_transfers

    def release(self, transfer_id: str) -> bool:
        with self._lock:
            return self._held.pop(transfer_id, None) is not None

    def held(self, producer_id: str) -> list[str]:
        with self._lock:
            return [tid for tid, (owner, _) in self._held.items() if owner == producer_id]


def _name(error: Exception) -> str:
    return type(error).__name__
