"""The contract net's rules (``runtime._contract_logic``) driven by a fake clock: no Ray, no sleeping."""

from __future__ import annotations

import pytest

from runtime._contract_logic import (
    ContractPolicy,
    Effect,
    NegotiationState,
    Proposal,
    announce,
    commit,
    done,
    due,
    failed,
    record_bid,
    refuse,
    tick,
    transition,
)
from runtime.exceptions import ContractError, IllegalTransition

POLICY = ContractPolicy(bid_seconds=10, commit_seconds=5, retry_seconds=2, max_rounds=2)
FAR = 1_000.0


def started(bidders=("a", "b", "c")):
    neg, effects = announce("t", {"size": 1}, list(bidders), 0.0, POLICY)
    assert effects == [Effect("cfp", b, 1) for b in bidders]
    return neg


def test_ties_are_broken_by_bidder_id_whatever_the_order_bids_arrive_in():
    for order in (("c", "b", "a"), ("a", "c", "b")):
        neg = started()
        for i, bidder in enumerate(order):
            neg, effects = record_bid(neg, bidder, 1, Proposal(cost=3, eta=1), FAR, 1.0 + i, POLICY)
        assert effects == [Effect("award", "a", 1)] and neg.awarded_to == "a"


def test_lower_cost_wins_then_lower_eta():
    neg = started()
    neg, _ = record_bid(neg, "a", 1, Proposal(cost=2, eta=9), FAR, 1.0, POLICY)
    neg, _ = record_bid(neg, "b", 1, Proposal(cost=2, eta=1), FAR, 1.0, POLICY)
    neg, effects = record_bid(neg, "c", 1, Proposal(cost=5, eta=0), FAR, 1.0, POLICY)
    assert effects == [Effect("award", "b", 1)] and neg.commit_deadline == 6.0


def test_a_custom_rank_is_pure_data_in_the_policy():
    policy = ContractPolicy(bid_seconds=10, rank=lambda bidder, p: (-p.capacity, bidder))
    neg, _ = announce("t", None, ["a", "b"], 0.0, policy)
    neg, _ = record_bid(neg, "a", 1, Proposal(cost=1, capacity=1), FAR, 1.0, policy)
    neg, _ = record_bid(neg, "b", 1, Proposal(cost=9, capacity=3), FAR, 1.0, policy)
    assert neg.awarded_to == "b"


def test_bidding_stays_open_until_the_deadline_when_a_bidder_is_silent():
    neg = started()
    neg, _ = record_bid(neg, "b", 1, Proposal(cost=1), FAR, 1.0, POLICY)
    neg, _ = refuse(neg, "c", 1, 2.0, POLICY)
    assert due(neg) == 10.0
    assert tick(neg, 9.99, POLICY) == (neg, [])
    neg, effects = tick(neg, 10.0, POLICY)
    assert effects == [Effect("award", "b", 1)] and neg.state is NegotiationState.AWARDED
    assert [h["why"] for h in neg.history if h["event"] == "closed"] == ["bid deadline"]


def test_a_late_a_stale_or_a_strangers_bid_is_not_counted_and_its_bidder_is_told_to_release():
    neg = started()
    neg, effects = record_bid(neg, "z", 1, Proposal(cost=0), FAR, 1.0, POLICY)
    assert effects == [Effect("reject", "z", 1, "bid not counted (late, stale or unknown)")] and not neg.bids
    neg, effects = record_bid(neg, "a", 7, Proposal(cost=0), FAR, 1.0, POLICY)
    assert effects[0].kind == "reject" and effects[0].round == 7 and not neg.bids
    neg, effects = record_bid(neg, "a", 1, Proposal(cost=0), FAR, 10.0, POLICY)  # at the deadline: closed
    assert Effect("reject", "a", 1, "bid not counted (late, stale or unknown)") in effects
    assert neg.state is NegotiationState.ANNOUNCED and neg.round == 2, "no bid counted: announced again"


def test_a_winner_that_does_not_commit_in_time_is_passed_over_for_the_next_best():
    neg = started()
    for bidder, cost in (("a", 1), ("b", 2), ("c", 3)):
        neg, _ = record_bid(neg, bidder, 1, Proposal(cost=cost), FAR, 1.0, POLICY)
    assert neg.awarded_to == "a" and due(neg) == 6.0
    neg, effects = tick(neg, 6.0, POLICY)
    assert effects == [Effect("reject", "a", 1, "award withdrawn: did not commit in time"), Effect("award", "b", 1)]
    neg, effects, accepted = commit(neg, "a", 1, 6.5, POLICY)
    assert not accepted and effects == [], "the late commit is refused: a releases, nothing doubles"
    neg, effects, accepted = commit(neg, "b", 1, 7.0, POLICY)
    assert accepted and neg.state is NegotiationState.COMMITTED and neg.winner == "b"
    assert effects == [Effect("reject", "c", 1, "another bidder won")], "a was released already"
    assert commit(neg, "b", 1, 8.0, POLICY)[1:] == ([], True), "a repeated commit gets the same answer"


def test_a_commit_after_the_deadline_is_refused_even_before_the_timer_looked():
    neg = started(("a",))
    neg, _ = record_bid(neg, "a", 1, Proposal(cost=1), FAR, 1.0, POLICY)
    neg, effects, accepted = commit(neg, "a", 1, 6.0, POLICY)
    assert not accepted and neg.state is NegotiationState.ANNOUNCED and neg.round == 2
    assert effects[0] == Effect("reject", "a", 1, "award withdrawn: did not commit in time")


def test_a_declined_award_goes_to_the_next_best_and_expired_bids_are_skipped():
    neg = started()
    neg, _ = record_bid(neg, "a", 1, Proposal(cost=1), FAR, 1.0, POLICY)
    neg, _ = record_bid(neg, "b", 1, Proposal(cost=2), 3.0, 1.0, POLICY)  # b holds its capacity until 3.0
    neg, _ = record_bid(neg, "c", 1, Proposal(cost=3), FAR, 1.0, POLICY)
    neg, effects = refuse(neg, "a", 1, 4.0, POLICY, "reservation released")
    assert neg.awarded_to == "c" and neg.passed_over == ("a",)
    assert effects[-1] == Effect("award", "c", 1)


def test_with_nobody_left_the_task_is_announced_again_after_a_pause_then_fails_after_max_rounds():
    neg = started(("a",))
    neg, _ = refuse(neg, "a", 1, 1.0, POLICY)
    assert neg.state is NegotiationState.ANNOUNCED and neg.round == 2 and due(neg) == 3.0
    assert tick(neg, 2.9, POLICY)[1] == []
    neg, effects = tick(neg, 3.0, POLICY)
    assert effects == [Effect("cfp", "a", 2)] and neg.bid_deadline == 13.0
    neg, effects = refuse(neg, "a", 1, 4.0, POLICY)
    assert neg.refused == (), "a refusal for an old round is not counted"
    neg, effects = tick(neg, 13.0, POLICY)
    assert neg.state is NegotiationState.FAILED and "no contractor after 2 rounds" in neg.reason and due(neg) is None


def test_results_are_accepted_from_the_committed_winner_only_and_repeats_change_nothing():
    neg = started(("a", "b"))
    neg, _ = record_bid(neg, "a", 1, Proposal(cost=1), FAR, 1.0, POLICY)
    with pytest.raises(IllegalTransition):
        done(neg, "a", 1, "early", 1.5)  # announced: nobody committed yet
    neg, _ = record_bid(neg, "b", 1, Proposal(cost=2), FAR, 1.0, POLICY)
    neg, _, _ = commit(neg, "a", 1, 2.0, POLICY)
    with pytest.raises(IllegalTransition):
        done(neg, "b", 1, "not mine", 3.0)
    finished = done(neg, "a", 1, 42, 3.0)
    assert finished.state is NegotiationState.DONE and finished.result == 42
    assert done(finished, "a", 1, 42, 4.0) is finished
    with pytest.raises(IllegalTransition) as err:
        failed(finished, "a", 1, "too late", 5.0)
    assert isinstance(err.value, ContractError) and err.value.details["state"] == "done"


@pytest.mark.parametrize(("start", "to", "legal"), [
    (NegotiationState.ANNOUNCED, NegotiationState.COMMITTED, False),
    (NegotiationState.ANNOUNCED, NegotiationState.DONE, False),
    (NegotiationState.AWARDED, NegotiationState.DONE, False),
    (NegotiationState.COMMITTED, NegotiationState.ANNOUNCED, False),
    (NegotiationState.DONE, NegotiationState.FAILED, False),
    (NegotiationState.FAILED, NegotiationState.ANNOUNCED, False),
    (NegotiationState.ANNOUNCED, NegotiationState.AWARDED, True),
    (NegotiationState.AWARDED, NegotiationState.COMMITTED, True),
    (NegotiationState.COMMITTED, NegotiationState.FAILED, True),
])
def test_transitions_are_refused_when_illegal(start, to, legal):
    neg = started().model_copy(update={"state": start})
    if legal:
        assert transition(neg, to, 1.0, "x").state is to
    else:
        with pytest.raises(IllegalTransition):
            transition(neg, to, 1.0, "x")
