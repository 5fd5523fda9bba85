"""Structured outcomes: one constructor per code with its defaults, invariants checked, JSON round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from governance import Outcome, OutcomeCode

CID = "corr-1"

# constructor call -> (code, retryable, escalation)
DEFAULTS = [
    (lambda: Outcome.success(CID, {"n": 1}), OutcomeCode.OK, False, None),
    (lambda: Outcome.refusal(CID, "capability payments.refund not granted"), OutcomeCode.REFUSED, False, None),
    (lambda: Outcome.awaiting(CID, "appr-1"), OutcomeCode.PENDING, False, "human"),
    (lambda: Outcome.denial(CID, "denied by alice: too much"), OutcomeCode.DENIED, False, None),
    (lambda: Outcome.expiry(CID), OutcomeCode.EXPIRED, False, None),
    (lambda: Outcome.breaker_tripped(CID, "breaker shop.refund open"), OutcomeCode.BREAKER_OPEN, True, None),
    (lambda: Outcome.over_budget(CID, "estimate 3.0 > 1.5 left"), OutcomeCode.BUDGET_EXCEEDED, True, "operator"),
    (lambda: Outcome.failure(CID, "timeout", retryable=True), OutcomeCode.FAILED, True, None),
    (lambda: Outcome.failure(CID, "bad card", retryable=False), OutcomeCode.FAILED, False, None),
    (lambda: Outcome.in_doubt(CID, "intent without outcome"), OutcomeCode.UNKNOWN, False, "human"),
]


@pytest.mark.parametrize(("make", "code", "retryable", "escalation"), DEFAULTS)
def test_each_constructor_sets_its_code_and_defaults(make, code, retryable, escalation):
    out = make()
    assert (out.code, out.retryable, out.escalation, out.correlation_id) == (code, retryable, escalation, CID)
    assert out.ok is (code is OutcomeCode.OK)


def test_every_code_has_a_constructor():
    assert {code for _, code, _, _ in DEFAULTS} == set(OutcomeCode)


@pytest.mark.parametrize(("make", "code", "retryable", "escalation"), DEFAULTS)
def test_every_outcome_round_trips_through_json(make, code, retryable, escalation):
    out = make()
    assert Outcome.model_validate(out.model_dump(mode="json")) == out


def test_a_pending_outcome_names_its_approval_request():
    assert Outcome.awaiting(CID, "appr-9").approval_id == "appr-9"
    with pytest.raises(ValidationError, match="approval_id"):
        Outcome(code=OutcomeCode.PENDING, correlation_id=CID)


@pytest.mark.parametrize("code", [OutcomeCode.REFUSED, OutcomeCode.DENIED, OutcomeCode.EXPIRED])
def test_refusals_denials_and_expiries_are_never_retryable(code):
    with pytest.raises(ValidationError, match="never retryable"):
        Outcome(code=code, correlation_id=CID, retryable=True)


def test_failure_must_say_whether_it_is_retryable():
    with pytest.raises(TypeError):
        Outcome.failure(CID, "boom")  # type: ignore[call-arg]


def test_partial_results_say_they_are_partial():
    out = Outcome.success(CID, [1, 2], partial=True, cost=0.25)
    assert out.ok and out.partial and out.cost == 0.25
    failed = Outcome.failure(CID, "page 3 timed out", retryable=True, result=[1, 2], partial=True)
    assert not failed.ok and failed.partial and failed.result == [1, 2]


@pytest.mark.parametrize("result", [object(), {1, 2}, {"when": 1j}])
def test_a_result_that_msgpack_cannot_carry_is_refused(result):
    with pytest.raises(ValidationError, match="msgpack"):
        Outcome.success(CID, result)


@pytest.mark.parametrize("cost", [-0.01, float("inf"), float("nan")])
def test_a_cost_is_a_finite_number_not_below_zero(cost):
    with pytest.raises(ValidationError, match="cost"):
        Outcome.success(CID, cost=cost)


def test_an_escalation_names_someone():
    with pytest.raises(ValidationError, match="escalation"):
        Outcome.in_doubt(CID, "?", escalation="  ")


def test_outcomes_are_frozen():
    out = Outcome.success(CID)
    with pytest.raises(ValidationError):
        out.code = OutcomeCode.FAILED  # type: ignore[misc]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(result=JSON, partial=st.booleans(), cost=st.none() | st.floats(0, 1e9))
def test_any_json_result_round_trips(result, partial, cost):
    out = Outcome.success(CID, result, partial=partial, cost=cost)
    assert Outcome.model_validate(out.model_dump(mode="json")) == out
