"""The fault benchmark's own arithmetic and inputs (its run is bench.faults; results in
bench/results/faults_tiny_cpu.*)."""

from __future__ import annotations

import math

import pytest
from google.protobuf.message import DecodeError

from bench.faults.cancels import CancelRecord, summary
from bench.faults.storm import CallResult, malformed_kinds
from bench.faults.storm import summary as storm_summary
from bench.faults.streams import StreamResult, compare
from proto.triserve.v1 import triserve_pb2 as pb


def results(**streams) -> dict[str, StreamResult]:
    return {rid: StreamResult(rid, tokens, error) for rid, (tokens, error) in streams.items()}


def test_compare_counts_lost_duplicated_and_wrong_tokens_and_failed_streams():
    reference = results(a=([1, 2, 3, 4], None), b=([5, 6], None), c=([7, 8, 9], None))
    faulted = results(
        a=([1, 2, 3, 4], None),  # clean
        b=([5, 6, 6], None),  # one duplicate
        c=([7, 0], "UNAVAILABLE: decode failed"),  # one wrong, one lost, failed
    )
    outcome = compare(reference, faulted)
    assert (outcome.num_streams, outcome.num_failed) == (3, 1)
    assert (outcome.num_lost_tokens, outcome.num_duplicated_tokens) == (1, 1)
    assert outcome.num_wrong_tokens == 1
    assert outcome.errors == ["c: UNAVAILABLE: decode failed"]


def test_malformed_kinds_are_malformed_as_named():
    kinds = malformed_kinds(big=False)
    for name in ("not_protobuf", "truncated", "invalid_utf8"):
        with pytest.raises(DecodeError):
            pb.GenerateRequest.FromString(kinds[name])
    assert math.isnan(pb.GenerateRequest.FromString(kinds["slo_nan"]).slo.ttft_ms)
    assert pb.GenerateRequest.FromString(kinds["slo_zero"]).slo.HasField("ttft_ms")
    assert pb.GenerateRequest.FromString(kinds["max_tokens_max"]).sampling.max_tokens == 2**32 - 1
    assert len(pb.GenerateRequest.FromString(kinds["request_id_1mb"]).request_id) == 2**20


def test_summaries_flag_unknown_statuses_leaks_and_cancels_that_ran_on():
    calls = [
        CallResult("a", "INVALID_ARGUMENT", 0.1, False),
        CallResult("a", "UNKNOWN", 0.2, True),
        CallResult("b", "INTERNAL", 0.3, False),
    ]
    storm = storm_summary(calls)
    assert (storm["unknown_or_internal"], storm["leaking_internals"]) == (2, 1)
    assert storm["by_kind"]["a"]["statuses"] == {"INVALID_ARGUMENT": 1, "UNKNOWN": 1}

    records = [
        CancelRecord("call_cancel", "r1", 3, "cancelled", 4),
        CancelRecord("channel_close", "r2", 2, "finished", 500),
    ]
    cancels = summary(records, max_tokens=500)
    assert (cancels["cancelled"], cancels["ran_to_limit"]) == (1, 1)
    assert cancels["by_way"]["call_cancel"]["server_tokens_beyond_client_max"] == 1
    assert cancels["by_way"]["channel_close"]["other_states"] == ["finished"]
