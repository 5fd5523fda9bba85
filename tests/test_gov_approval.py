"""One approval request: bound to its call, distinct approvers, denial and expiry, forged records refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import (
    Action,
    ApprovalError,
    ApprovalRequest,
    ApprovalState,
    Clearance,
    OutcomeCode,
    Risk,
    RiskPolicy,
    Verdict,
    approve,
    binding_hash,
    check,
    deny,
    expire,
    new_request,
)


class Refund(Action, name="gov_test.approval.refund", capability="payments.refund",
             risk=lambda a: Risk.HIGH if a.amount > 50 else Risk.MEDIUM):
    order: str
    amount: float
    note: str = ""


class Shred(Action, name="gov_test.approval.shred", capability="records.shred", risk="prohibited"):
    pass


T0 = 1_000.0
POLICY = RiskPolicy(version="p1", approval_ttl=600)
TWO = RiskPolicy(version="p1", approval_ttl=600, approvals_required=2)
REFUND = Refund(order="A1", amount=80)


def _request(policy: RiskPolicy = POLICY, action: Action = REFUND) -> ApprovalRequest:
    return new_request(action, request_id="appr-1", agent_id="shop-agent", policy=policy, config_version="c7",
                       now=T0, context="customer asked for a refund of a broken kettle")


def test_a_new_request_records_the_call_and_the_rules_it_was_made_under():
    req = _request()
    assert (req.id, req.agent_id, req.action, req.state) == ("appr-1", "shop-agent", "gov_test.approval.refund@1",
                                                             ApprovalState.PENDING)
    assert req.arguments == {"order": "A1", "amount": 80.0, "note": ""}
    assert (req.policy_version, req.config_version, req.approvals_required) == ("p1", "c7", 1)
    assert (req.created, req.expires) == (T0, T0 + 600)
    assert req.binding_hash == binding_hash(REFUND, "p1", "c7")
    assert ApprovalRequest.model_validate(req.model_dump(mode="json")) == req


def test_one_approval_clears_the_very_call_it_was_asked_for():
    req = approve(_request(), "alice", T0 + 10)
    assert req.state is ApprovalState.APPROVED and req.approvers() == ("alice",) and req.approvals[0].at == T0 + 10
    verdict = check(req, Refund(order="A1", amount=80), POLICY, "c7", T0 + 20)
    assert verdict.may_execute and verdict.clearance is Clearance.EXECUTE and verdict.outcome("corr") is None


@pytest.mark.parametrize(("action", "policy", "config"), [
    (Refund(order="A1", amount=81), POLICY, "c7"),
    (Refund(order="A2", amount=80), POLICY, "c7"),
    (Refund(order="A1", amount=80, note="x"), POLICY, "c7"),
    (REFUND, RiskPolicy(version="p2", approval_ttl=600), "c7"),
    (REFUND, POLICY, "c8"),
])
def test_an_approval_is_void_when_the_arguments_policy_or_config_change(action, policy, config):
    verdict = check(approve(_request(), "alice", T0 + 10), action, policy, config, T0 + 20)
    assert verdict.clearance is Clearance.VOID and not verdict.may_execute
    outcome = verdict.outcome("corr-1")
    assert (outcome.code, outcome.reason, outcome.approval_id) == (
        OutcomeCode.DENIED, "void: arguments/policy/config changed", "appr-1")


def test_two_approvals_must_come_from_two_people():
    req = approve(_request(TWO), "alice", T0 + 1)
    assert req.state is ApprovalState.PENDING
    assert check(req, REFUND, TWO, "c7", T0 + 2).clearance is Clearance.PENDING
    for again in ("alice", " Alice ", "ALICE"):
        assert approve(req, again, T0 + 3) == req, "the same person twice is one approval"
    req = approve(req, "bob", T0 + 4)
    assert req.state is ApprovalState.APPROVED and req.approvers() == ("alice", "bob")
    assert check(req, REFUND, TWO, "c7", T0 + 5).may_execute


def test_approving_an_approved_request_again_changes_nothing():
    req = approve(_request(), "alice", T0 + 1)
    assert approve(req, "alice", T0 + 2) == req and approve(req, "carol", T0 + 2) == req


def test_the_requesting_agent_cannot_approve_its_own_request():
    with pytest.raises(ApprovalError, match="cannot approve its own request"):
        approve(_request(), "Shop-Agent", T0 + 1)


@pytest.mark.parametrize("who", ["", "   ", None, 7])
def test_an_approver_is_a_non_empty_identity(who):
    with pytest.raises(ApprovalError, match="identity"):
        approve(_request(), who, T0 + 1)  # type: ignore[arg-type]
    with pytest.raises(ApprovalError, match="identity"):
        deny(_request(), who, "no", T0 + 1)  # type: ignore[arg-type]


def test_a_denial_is_final_and_reaches_the_agent_as_an_outcome():
    req = deny(_request(TWO), "bob", "refund exceeds the order total", T0 + 5)
    assert req.state is ApprovalState.DENIED and (req.denial.who, req.denial.at) == ("bob", T0 + 5)
    assert deny(req, "carol", "me too", T0 + 6) == req, "the first denial stands"
    with pytest.raises(ApprovalError, match="it is denied") as err:
        approve(req, "alice", T0 + 7)
    assert err.value.details == {"request": "appr-1", "state": "denied"}
    outcome = check(req, REFUND, TWO, "c7", T0 + 8).outcome("corr-2")
    assert (outcome.code, outcome.reason, outcome.retryable) == (
        OutcomeCode.DENIED, "denied by bob: refund exceeds the order total", False)


def test_one_denial_overrules_an_earlier_approval_when_two_are_needed():
    req = deny(approve(_request(TWO), "alice", T0 + 1), "bob", "no", T0 + 2)
    assert req.state is ApprovalState.DENIED and check(req, REFUND, TWO, "c7", T0 + 3).clearance is Clearance.DENIED


def test_an_approved_request_cannot_be_denied_any_more():
    with pytest.raises(ApprovalError, match="cannot deny request appr-1: it is approved"):
        deny(approve(_request(), "alice", T0 + 1), "bob", "changed my mind", T0 + 2)


def test_a_denial_says_why():
    with pytest.raises(ApprovalError, match="says why"):
        deny(_request(), "bob", "  ", T0 + 1)


def test_a_request_expires_when_its_time_to_live_passes():
    req = _request()
    assert expire(req, T0 + 599.9) == req
    assert req.state_at(T0 + 599.9) is ApprovalState.PENDING and req.state_at(T0 + 600) is ApprovalState.EXPIRED
    with pytest.raises(ApprovalError, match="it is expired"):
        approve(req, "alice", T0 + 600)  # expired by time alone, before anyone called expire()
    gone = expire(req, T0 + 600)
    assert gone.state is ApprovalState.EXPIRED and expire(gone, T0 + 700) == gone
    with pytest.raises(ApprovalError, match="it is expired"):
        deny(gone, "bob", "late", T0 + 601)
    outcome = check(gone, REFUND, POLICY, "c7", T0 + 601).outcome("corr-3")
    assert (outcome.code, outcome.approval_id, outcome.retryable) == (OutcomeCode.EXPIRED, "appr-1", False)


def test_an_approval_lapses_if_it_is_not_executed_before_the_request_expires():
    req = approve(_request(), "alice", T0 + 10)
    assert check(req, REFUND, POLICY, "c7", T0 + 599).may_execute
    assert check(req, REFUND, POLICY, "c7", T0 + 600).clearance is Clearance.EXPIRED
    assert expire(req, T0 + 700) == req, "expire() only moves pending requests"


def test_a_pending_request_tells_the_agent_to_wait_for_the_decision():
    outcome = check(_request(), REFUND, POLICY, "c7", T0 + 1).outcome("corr-4")
    assert (outcome.code, outcome.approval_id, outcome.escalation) == (OutcomeCode.PENDING, "appr-1", "human")


def test_a_prohibited_action_is_never_approvable():
    with pytest.raises(ApprovalError, match="never approvable"):
        _request(action=Shred())
    made_prohibited = RiskPolicy(version="p1", overrides={"gov_test.approval.refund": "prohibited"})
    with pytest.raises(ApprovalError, match="never approvable"):
        _request(policy=made_prohibited)


def test_a_forged_approved_record_never_clears_a_prohibited_action():
    forged = ApprovalRequest(
        id="appr-x", agent_id="shop-agent", action="gov_test.approval.shred@1", arguments={},
        binding_hash=binding_hash(Shred(), "p1", "c7"), policy_version="p1", config_version="c7",
        created=T0, expires=T0 + 600, approvals_required=1, approvals=({"who": "mallory", "at": T0},),
        state="approved",
    )
    verdict = check(forged, Shred(), POLICY, "c7", T0 + 1)
    assert verdict.clearance is Clearance.PROHIBITED and not verdict.may_execute
    assert verdict.outcome("corr-5").code is OutcomeCode.REFUSED


@pytest.mark.parametrize(("changes", "match"), [
    ({"state": "approved"}, "approved with 0 of 1"),
    ({"state": "approved", "approvals_required": 2, "approvals": [{"who": "a", "at": T0}]}, "approved with 1 of 2"),
    ({"state": "approved", "approvals_required": 2,
      "approvals": [{"who": "a", "at": T0}, {"who": " A", "at": T0}]}, "distinct"),
    ({"state": "pending", "approvals": [{"who": "a", "at": T0}]}, "pending with 1 of 1"),
    ({"state": "approved", "approvals": [{"who": "shop-agent", "at": T0}]}, "its own request"),
    ({"state": "denied"}, "denial exactly when"),
    ({"denial": {"who": "b", "at": T0, "why": "no"}}, "denial exactly when"),
    ({"expires": T0}, "after created"),
    ({"id": " "}, "non-empty"),
    ({"approvals_required": 0}, "approvals_required"),
])
def test_an_inconsistent_stored_request_does_not_load(changes, match):
    with pytest.raises(ApprovalError, match=match):
        ApprovalRequest.model_validate({**_request().model_dump(mode="json"), **changes})


def test_an_approval_short_of_what_the_current_policy_requires_does_not_clear():
    one = approve(_request(POLICY), "alice", T0 + 1)  # made when one approver was enough, same policy version
    verdict = check(one, REFUND, TWO, "c7", T0 + 2)
    assert verdict.clearance is Clearance.VOID and "needs 2 approvers" in verdict.reason


@pytest.mark.parametrize(("clearance", "code"), [
    (Clearance.PENDING, OutcomeCode.PENDING),
    (Clearance.DENIED, OutcomeCode.DENIED),
    (Clearance.VOID, OutcomeCode.DENIED),
    (Clearance.EXPIRED, OutcomeCode.EXPIRED),
    (Clearance.PROHIBITED, OutcomeCode.REFUSED),
])
def test_every_clearance_but_execute_becomes_an_outcome_that_does_not_execute(clearance, code):
    outcome = Verdict(clearance=clearance, reason="r", approval_id="appr-1").outcome("corr")
    assert outcome.code is code and not outcome.ok and not outcome.retryable and outcome.correlation_id == "corr"


ARGS = st.fixed_dictionaries({"order": st.text(max_size=8), "amount": st.floats(51, 1e6), "note": st.text(max_size=8)})


@settings(max_examples=60, deadline=None)
@given(args=ARGS, field=st.sampled_from(["order", "amount", "note"]), data=st.data())
def test_any_change_of_one_argument_changes_the_binding_hash(args, field, data):
    before = Refund(**args)
    other = {"order": st.text(max_size=8), "amount": st.floats(51, 1e6), "note": st.text(max_size=8)}[field]
    new_value = data.draw(other.filter(lambda v: v != args[field]))
    after = Refund(**{**args, field: new_value})
    assert binding_hash(after, "p1", "c7") != binding_hash(before, "p1", "c7")
    assert binding_hash(Refund(**args), "p1", "c7") == binding_hash(before, "p1", "c7")


@settings(max_examples=40, deadline=None)
@given(p1=st.text(min_size=1, max_size=6), p2=st.text(min_size=1, max_size=6),
       c1=st.text(min_size=1, max_size=6), c2=st.text(min_size=1, max_size=6))
def test_the_binding_hash_separates_policy_and_config_versions(p1, p2, c1, c2):
    same = binding_hash(REFUND, p1, c1) == binding_hash(REFUND, p2, c2)
    assert same is (p1 == p2 and c1 == c2)
