"""The admission decision: what each policy does with a request predicted to miss its SLO."""

from __future__ import annotations

import pickle

import pytest

from scheduler.admission import Admission, AdmissionDecision, decide
from scheduler.errors import AdmissionRejectedError
from scheduler.slo import SloTargets

TARGETS = SloTargets(ttft_ms=1_000.0, tpot_ms=50.0)


def test_request_predicted_to_make_both_targets_is_admitted():
    decision = decide("reject", TARGETS, 1_000.0, 50.0, is_queue_full=False)

    assert decision == AdmissionDecision(Admission.ADMIT, 1_000.0, 50.0, "", None)


@pytest.mark.parametrize(
    ("policy", "action", "retry_after_ms"),
    [
        ("reject", Admission.REJECT, 350.0),
        ("degrade", Admission.DEGRADE, None),
        ("best_effort", Admission.BEST_EFFORT, None),
    ],
)
def test_predicted_ttft_miss_is_handled_as_the_policy_says(policy, action, retry_after_ms):
    decision = decide(policy, TARGETS, 1_350.0, 10.0, is_queue_full=False)

    assert decision == AdmissionDecision(
        action, 1_350.0, 10.0, "predicted TTFT 1350 ms > target 1000", retry_after_ms
    )


@pytest.mark.parametrize(
    ("policy", "action"),
    [
        ("reject", Admission.REJECT),
        ("degrade", Admission.DEGRADE),
        ("best_effort", Admission.BEST_EFFORT),
    ],
)
def test_predicted_tpot_miss_alone_is_handled_as_the_policy_says(policy, action):
    decision = decide(policy, TARGETS, 200.0, 80.0, is_queue_full=False)

    assert decision.action is action
    assert decision.reason == "predicted TPOT 80 ms > target 50"


def test_rejection_for_tpot_alone_hints_the_minimum_retry_after():
    decision = decide("reject", TARGETS, 200.0, 80.0, is_queue_full=False, min_retry_after_ms=250.0)

    assert decision.retry_after_ms == 250.0


def test_missing_both_targets_names_both():
    decision = decide("reject", TARGETS, 1_020.0, 80.0, is_queue_full=False)

    assert decision.reason == (
        "predicted TTFT 1020 ms > target 1000; predicted TPOT 80 ms > target 50"
    )
    assert decision.retry_after_ms == 100.0


@pytest.mark.parametrize("policy", ["reject", "degrade", "best_effort"])
def test_full_queue_rejects_whatever_the_policy(policy):
    decision = decide(policy, TARGETS, 100.0, 10.0, is_queue_full=True)

    assert decision == AdmissionDecision(
        Admission.REJECT, 100.0, 10.0, "the scheduler's queue for this request is full", 100.0
    )


def test_full_queue_hints_the_ttft_excess_when_it_is_larger_than_the_minimum():
    decision = decide("best_effort", TARGETS, 1_400.0, 10.0, is_queue_full=True)

    assert decision.action is Admission.REJECT
    assert decision.retry_after_ms == 400.0


def test_a_rejection_survives_pickling_with_its_retry_after_hint():
    error = pickle.loads(pickle.dumps(AdmissionRejectedError("queue full", 250.0)))

    assert (str(error), error.retry_after_ms) == ("queue full", 250.0)
