"""Risk policy and capability grants: the decision matrix, the review limit, prohibited stays prohibited."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import (
    Action,
    DecisionCode,
    PolicyError,
    Risk,
    RiskPolicy,
    decide,
    effective_risk,
    is_granted,
    parse_grants,
)


class Ping(Action, name="gov_test.risk.ping", capability="net.ping", risk="low"):
    pass


class Refund(Action, name="gov_test.risk.refund", capability="payments.refund",
             risk=lambda a: Risk.HIGH if a.amount > 50 else Risk.MEDIUM):
    amount: float


class Wire(Action, name="gov_test.risk.wire", capability="payments.wire.out", risk=Risk.HIGH):
    pass


class Shred(Action, name="gov_test.risk.shred", capability="records.shred", risk=Risk.PROHIBITED):
    pass


POLICY = RiskPolicy(version="p1", medium_unreviewed_limit=3)
ALL = frozenset({"net.ping", "payments.*", "records.shred"})
D = DecisionCode


@pytest.mark.parametrize(("action", "granted", "code", "risk"), [
    (Ping(), ALL, D.EXECUTE, Risk.LOW),
    (Refund(amount=10), ALL, D.EXECUTE_AND_FLAG, Risk.MEDIUM),
    (Refund(amount=80), ALL, D.NEEDS_APPROVAL, Risk.HIGH),
    (Wire(), ALL, D.NEEDS_APPROVAL, Risk.HIGH),
    (Shred(), ALL, D.PROHIBIT, Risk.PROHIBITED),
    (Ping(), frozenset(), D.REFUSE, None),
    (Refund(amount=10), frozenset({"net.ping"}), D.REFUSE, None),
    (Wire(), frozenset({"payments.refund"}), D.REFUSE, None),
    (Shred(), frozenset({"records.read"}), D.REFUSE, None),
])
def test_the_decision_matrix_of_risk_and_grants(action, granted, code, risk):
    decision = decide(action, POLICY, granted=granted, unreviewed_medium=0)
    assert (decision.code, decision.risk, decision.policy_version) == (code, risk, "p1")
    assert decision.executes is (code in (D.EXECUTE, D.EXECUTE_AND_FLAG))
    if code is D.REFUSE:
        assert decision.reason == f"capability {type(action).capability!r} is not granted to this agent"


@pytest.mark.parametrize(("limit", "unreviewed", "code"), [
    (3, 0, D.EXECUTE_AND_FLAG),
    (3, 2, D.EXECUTE_AND_FLAG),
    (3, 3, D.NEEDS_APPROVAL),
    (3, 50, D.NEEDS_APPROVAL),
    (0, 0, D.NEEDS_APPROVAL),
])
def test_medium_actions_block_once_the_unreviewed_limit_is_reached(limit, unreviewed, code):
    policy = RiskPolicy(version="p1", medium_unreviewed_limit=limit)
    assert decide(Refund(amount=10), policy, granted=ALL, unreviewed_medium=unreviewed).code is code


def test_the_count_of_unreviewed_medium_actions_does_not_touch_low_or_high():
    assert decide(Ping(), POLICY, granted=ALL, unreviewed_medium=99).code is D.EXECUTE
    assert decide(Wire(), POLICY, granted=ALL, unreviewed_medium=0).code is D.NEEDS_APPROVAL


def test_an_ungranted_action_is_refused_before_its_risk_function_runs():
    calls = []

    class Traced(Action, name="gov_test.risk.traced", capability="x.y", risk=lambda a: calls.append(a) or "low"):
        pass

    assert decide(Traced(), POLICY, granted=frozenset(), unreviewed_medium=0).code is D.REFUSE
    assert calls == []
    assert decide(Traced(), POLICY, granted=frozenset({"x.y"}), unreviewed_medium=0).code is D.EXECUTE
    assert len(calls) == 1


@pytest.mark.parametrize(("capability", "grants", "granted"), [
    ("payments.refund", {"payments.refund"}, True),
    ("payments.refund", {"payments.*"}, True),
    ("payments.refund.large", {"payments.*"}, True),
    ("payments.refund.large", {"payments.refund.*"}, True),
    ("payments", {"payments.*"}, False),
    ("paymentsx.refund", {"payments.*"}, False),
    ("payments.refund", {"payments.refund.*"}, False),
    ("payments.refund", {"payments"}, False),
    ("payments.refund", {"payments.ref"}, False),
    ("payments.refund", {"*"}, False),
    ("payments.refund", {"payments*"}, False),
    ("payments.refund", set(), False),
])
def test_the_grant_grammar_is_exact_or_a_prefix_wildcard(capability, grants, granted):
    assert is_granted(capability, frozenset(grants)) is granted


@pytest.mark.parametrize("grant", ["*", "payments*", "payments.*.refund", "", ".refund", "pay ments", 3])
def test_parse_grants_refuses_what_would_match_nothing(grant):
    with pytest.raises(PolicyError, match="capability grant"):
        parse_grants(["net.ping", grant])


def test_parse_grants_keeps_good_grants():
    assert parse_grants(["a.b", "c.*", "a.b"]) == frozenset({"a.b", "c.*"})


def test_overrides_by_tag_win_over_overrides_by_name_which_win_over_the_declaration():
    by_name = RiskPolicy(version="p2", overrides={"gov_test.risk.wire": "low"})
    assert effective_risk(Wire(), by_name) is Risk.LOW
    both = RiskPolicy(version="p3", overrides={"gov_test.risk.wire": "low", "gov_test.risk.wire@1": "medium"})
    assert effective_risk(Wire(), both) is Risk.MEDIUM
    other_version = RiskPolicy(version="p4", overrides={"gov_test.risk.wire@2": "low"})
    assert effective_risk(Wire(), other_version) is Risk.HIGH
    assert decide(Ping(), RiskPolicy(version="p5", overrides={"gov_test.risk.ping": "prohibited"}),
                  granted=ALL, unreviewed_medium=0).code is D.PROHIBIT


@settings(max_examples=60, deadline=None)
@given(override=st.sampled_from(list(Risk)), by_tag=st.booleans(), limit=st.integers(0, 5),
       approvers=st.sampled_from([1, 2]), unreviewed=st.integers(0, 10))
def test_a_declared_prohibited_action_is_prohibited_under_any_policy(override, by_tag, limit, approvers, unreviewed):
    key = "gov_test.risk.shred@1" if by_tag else "gov_test.risk.shred"
    policy = RiskPolicy(version="px", overrides={key: override}, medium_unreviewed_limit=limit,
                        approvals_required=approvers)
    assert decide(Shred(), policy, granted=ALL, unreviewed_medium=unreviewed).code is D.PROHIBIT


@pytest.mark.parametrize(("fields", "match"), [
    ({"version": ""}, "version"),
    ({"version": "p", "approvals_required": 0}, "approvals_required"),
    ({"version": "p", "approvals_required": 3}, "approvals_required"),
    ({"version": "p", "medium_unreviewed_limit": -1}, "medium_unreviewed_limit"),
    ({"version": "p", "approval_ttl": 0}, "approval_ttl"),
    ({"version": "p", "approval_ttl": float("inf")}, "approval_ttl"),
    ({"version": "p", "overrides": {"a.b": "extreme"}}, "overrides"),
    ({"version": "p", "overrides": {"a.b@x": "low"}}, "overrides"),
    ({"version": "p", "overrides": {"@1": "low"}}, "overrides"),
    ({"version": "p", "surprise": 1}, "surprise"),
    ({}, "version"),
])
def test_a_bad_policy_is_a_policy_error_naming_the_field(fields, match):
    with pytest.raises(PolicyError, match=match) as err:
        RiskPolicy(**fields)
    assert err.value.details["errors"]
    with pytest.raises(PolicyError, match=match):
        RiskPolicy.model_validate(fields)


def test_a_policy_is_frozen_data_that_round_trips_through_json():
    given_overrides = {"gov_test.risk.wire": "low"}
    policy = RiskPolicy(version="p9", overrides=given_overrides, approvals_required=2, approval_ttl=60)
    given_overrides["gov_test.risk.wire"] = "prohibited"
    assert effective_risk(Wire(), policy) is Risk.LOW, "the policy holds its own copy"
    assert RiskPolicy.model_validate(policy.model_dump(mode="json")) == policy
    with pytest.raises(Exception, match="frozen"):
        policy.version = "p10"  # type: ignore[misc]
