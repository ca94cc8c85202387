"""Transfers fail closed: a stale, corrupt or released array never reaches a consumer."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from workers.contract.messages import TransferRef
from workers.object_store_transport import ObjectStoreTransport
from workers.transport import InProcessTransport, TransferError, array_checksum


def kv_like_array() -> np.ndarray:
    return np.arange(2 * 2 * 5 * 2 * 4, dtype=np.float32).reshape(2, 2, 5, 2, 4)


def test_fetch_returns_the_producers_array_read_only():
    transport = InProcessTransport()
    array = kv_like_array()
    ref = transport.put(array, "prefill-0", epoch=7)
    array[0] = -1  # the producer's later writes do not reach the consumer
    fetched = transport.fetch(ref, expected_epoch=7)
    np.testing.assert_array_equal(fetched, kv_like_array())
    assert not fetched.flags.writeable
    assert (ref.producer_id, ref.producer_epoch, ref.nbytes) == ("prefill-0", 7, 640)
    assert ref.checksum == array_checksum(kv_like_array())


def test_a_flipped_byte_is_rejected_as_corrupt():
    transport = InProcessTransport()
    ref = transport.put(kv_like_array(), "prefill-0", epoch=7)
    transport.arrays[ref.transfer_id].reshape(-1).view(np.uint8)[13] ^= 0x01
    with pytest.raises(TransferError, match="corrupt"):
        transport.fetch(ref, expected_epoch=7)


def test_an_array_from_another_producer_epoch_is_rejected_as_stale():
    transport = InProcessTransport()
    ref = transport.put(kv_like_array(), "prefill-0", epoch=7)
    with pytest.raises(TransferError, match="stale"):
        transport.fetch(ref, expected_epoch=8)


def test_release_drops_the_producers_copy_and_later_fetches_fail():
    transport = InProcessTransport()
    kept = transport.put(kv_like_array(), "prefill-0", epoch=7)
    released = transport.put(kv_like_array(), "prefill-0", epoch=7)
    other = transport.put(kv_like_array(), "encode-0", epoch=1)
    assert transport.release(released.transfer_id) is True
    assert transport.release(released.transfer_id) is False
    assert transport.held("prefill-0") == [kept.transfer_id]
    assert transport.held("encode-0") == [other.transfer_id]
    with pytest.raises(TransferError, match="gone"):
        transport.fetch(released, expected_epoch=7)


def test_checksum_covers_non_contiguous_arrays_in_c_order():
    array = kv_like_array()
    assert array_checksum(array.transpose(1, 0, 2, 3, 4)) == array_checksum(
        np.ascontiguousarray(array.transpose(1, 0, 2, 3, 4))
    )
    assert array_checksum(array) != array_checksum(array.transpose(1, 0, 2, 3, 4))


def test_an_object_store_failure_names_its_class_and_logs_rays_text(monkeypatch, caplog):
    def lost(*args, **kwargs):
        raise ray.exceptions.GetTimeoutError('Get timed out\nTraceback ...\n  File "/x.py"')

    monkeypatch.setattr(ray, "get", lost)
    ref = TransferRef(
        transfer_id="p-0/1",
        handle=[object()],
        nbytes=8,
        checksum=0,
        producer_id="p-0",
        producer_epoch=7,
    )
    with pytest.raises(TransferError) as failure:
        ObjectStoreTransport().fetch(ref, expected_epoch=7)
    assert str(failure.value) == "transfer p-0/1 cannot be fetched (GetTimeoutError)"
    assert "Traceback" in caplog.text
