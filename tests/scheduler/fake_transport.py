"""A stand-in for the object store, shared by the fake workers of one test cluster."""

from __future__ import annotations

import itertools

from workers.contract.messages import TransferRef


class FakeTransport:
    """The object store: transfer id -> value. `num_to_corrupt[kind]`: the next arrays of that
    kind ("emb" or "kv") are stored wrong, so that their consumer's checksum fails."""

    def __init__(self) -> None:
        self.arrays: dict[str, int] = {}
        self.num_fetches = 0
        self.num_to_corrupt = {"emb": 0, "kv": 0}
        self._ids = itertools.count()

    def put(self, producer: str, epoch: int, kind: str, value: int, nbytes: int) -> TransferRef:
        transfer_id = f"{producer}/{kind}{next(self._ids)}"
        self.arrays[transfer_id] = value + 1 if self.num_to_corrupt[kind] else value
        self.num_to_corrupt[kind] = max(0, self.num_to_corrupt[kind] - 1)
        return TransferRef(transfer_id, None, nbytes, value, producer, epoch)

    def fetch(self, ref: TransferRef) -> int | None:
        """The value, or None when it is gone or fails its checksum."""
        self.num_fetches += 1
        value = self.arrays.get(ref.transfer_id)
        return value if value == ref.checksum else None
