"""The contract net's rules: one task's negotiation as a frozen record and pure functions over it.

No Ray, no LMDB, no clock of its own: every function takes ``now`` and returns the new
:class:`Negotiation` plus the :class:`Effect` list the manager must send (CFPs, awards, releases).
The :class:`~runtime.contracts.ContractManager` agent stores the record in its state and turns the
effects into ``self.send`` calls in the same transaction; tests drive the functions with a fake clock.

A negotiation's life (one task; ``round`` counts announcements)::

    announce ──► ANNOUNCED ──bidding closes with a usable bid──► AWARDED ──winner commits──► COMMITTED
                  ▲   │                                            │  ▲                          │  │
                  │   └─ no usable bid, rounds left: round + 1 ◄──┘  └ winner passed over:   done │  │ failed
                  │      (CFPs again after ``retry_seconds``)          next best bid              ▼  ▼
                  └──────────────────────────────────────────────                           DONE   FAILED
                  (no usable bid and no rounds left: FAILED)

Semantics, with their edge cases:

- **Bidding.** A CFP goes to every bidder; each answers a :class:`Proposal` (holding a reservation
  of its capacity until the bid's ``expires``) or a refusal.  Bidding closes at ``bid_deadline``, or
  as soon as every bidder has answered.  A bid that is late, for another round, from a stranger or
  a repeat is not counted, and its bidder is told to release (a ``reject`` effect).
- **Selection.** Among the counted bids not yet expired and not passed over, the policy's ``rank``
  (a pure key function of bidder and proposal) picks the lowest; the default is ``lowest_cost``:
  ``(cost, eta, bidder id)``, so ties are broken the same way every time.
- **Award and commit.** The winner has ``commit_seconds`` to commit.  A commit from the current
  winner of the current round makes the negotiation COMMITTED and tells every other bidder of the
  round to release; a repeated commit by that winner is accepted again (idempotent); any other
  commit is refused (the contractor releases and does nothing).  Losers keep their reservation
  until then: they may be awarded next.
- **A winner that does not commit.** At ``commit_deadline``, or when it declines (refuses the
  award), the winner is passed over and told to release; the next best bid is awarded; with none
  left the task is announced again (a new round, every bidder's reservations released), up to
  ``max_rounds``, after which it is FAILED.
- **Results.** ``done``/``failed`` are accepted from the committed winner of its round only; a
  repeat of the same outcome changes nothing; anything else raises :class:`IllegalTransition`.

Invariant: at most one bidder is ever COMMITTED for a task, and only a commit the manager accepted
lets a contractor perform: so a task is performed at most once, and (with durable messages and
deadlines) at least once unless it FAILED.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from .exceptions import IllegalTransition

__all__ = ["LEGAL", "ContractPolicy", "Effect", "Negotiation", "NegotiationState", "Proposal", "announce",
           "commit", "done", "due", "failed", "lowest_cost", "record_bid", "refuse", "tick", "transition"]


class NegotiationState(enum.StrEnum):
    ANNOUNCED = "announced"  # CFPs out (or due at ``cfp_at``), collecting bids until ``bid_deadline``
    AWARDED = "awarded"  # one bidder awarded, waiting for its commit until ``commit_deadline``
    COMMITTED = "committed"  # the winner committed: it performs the task, the others released
    DONE = "done"  # the winner reported a result (terminal)
    FAILED = "failed"  # no contractor after ``max_rounds``, or the winner failed (terminal)


#: state -> the states it may move to.
LEGAL: dict[NegotiationState, frozenset[NegotiationState]] = {
    NegotiationState.ANNOUNCED: frozenset({NegotiationState.ANNOUNCED, NegotiationState.AWARDED,
                                           NegotiationState.FAILED}),
    NegotiationState.AWARDED: frozenset({NegotiationState.ANNOUNCED, NegotiationState.AWARDED,
                                         NegotiationState.COMMITTED, NegotiationState.FAILED}),
    NegotiationState.COMMITTED: frozenset({NegotiationState.DONE, NegotiationState.FAILED}),
    NegotiationState.DONE: frozenset(),
    NegotiationState.FAILED: frozenset(),
}


class Proposal(BaseModel):
    """What a bidder offers: lower ``cost`` wins by default, then lower ``eta``; ``capacity`` is
    what it has left after this bid (informative; a policy may rank by it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cost: float
    eta: float = 0.0
    capacity: int = 0


class BidRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal: Proposal
    expires: float
    at: float


def lowest_cost(bidder: str, proposal: Proposal) -> tuple[Any, ...]:
    """The default ranking: lowest cost, then lowest eta, then bidder id (ties always break the same way)."""
    return (proposal.cost, proposal.eta, bidder)


@dataclass(frozen=True)
class ContractPolicy:
    """A manager's timing and selection; all durations in seconds."""

    bid_seconds: float = 5.0  # how long bidding stays open after the CFPs go out
    commit_seconds: float = 5.0  # how long an awarded bidder has to commit
    retry_seconds: float = 1.0  # pause before announcing again when no usable bid came
    max_rounds: int = 5  # announcements before the task FAILS for want of a contractor
    rank: Callable[[str, Proposal], Any] = lowest_cost  # pure key function: the lowest ranked bid wins

    def award_by(self, bid_deadline: float, bidders: int) -> float:
        """The latest a bid of a round can still be awarded (each bidder passed over once): what
        bidders hold their reservation until."""
        return bid_deadline + bidders * self.commit_seconds


class Effect(NamedTuple):
    """A message the manager must send: ``kind`` is ``cfp``, ``award`` or ``reject`` (release)."""

    kind: str
    to: str
    round: int
    reason: str = ""


class Negotiation(BaseModel):
    """One task's negotiation (stored as JSON data in the manager's state)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    task: Any = None
    bidders: tuple[str, ...]
    state: NegotiationState = NegotiationState.ANNOUNCED
    round: int = 1
    cfp_at: float | None = None  # CFPs of this round not sent yet: they go at this time
    bid_deadline: float
    bids: dict[str, BidRecord] = Field(default_factory=dict)
    refused: tuple[str, ...] = ()
    passed_over: tuple[str, ...] = ()  # awarded this round but did not commit (or declined)
    awarded_to: str | None = None
    commit_deadline: float | None = None
    winner: str | None = None  # the committed bidder
    result: Any = None
    reason: str = ""
    history: tuple[dict[str, Any], ...] = ()

    def note(self, now: float, event: str, **detail: Any) -> Negotiation:
        entry = {"at": now, "event": event, "round": self.round, **detail}
        return self.model_copy(update={"history": (*self.history, entry)})


def transition(neg: Negotiation, to: NegotiationState, now: float, event: str, **changes: Any) -> Negotiation:
    """``neg`` moved to state ``to`` with ``changes``, the move recorded in its history as ``event``;
    :class:`IllegalTransition` if ``LEGAL`` does not allow it."""
    if to not in LEGAL[neg.state]:
        raise IllegalTransition(f"task {neg.task_id!r}: cannot go from {neg.state.value} to {to.value} ({event})",
                                task_id=neg.task_id, state=neg.state.value, to=to.value, event=event)
    detail = {k: v for k, v in changes.items() if k in ("awarded_to", "winner", "reason")}
    return neg.model_copy(update={"state": to, **changes}).note(now, event, **detail)


def announce(task_id: str, task: Any, bidders: list[str] | tuple[str, ...], now: float,
             policy: ContractPolicy) -> tuple[Negotiation, list[Effect]]:
    """A new negotiation, its CFPs going out now."""
    if not bidders:
        raise ValueError(f"task {task_id!r}: a contract net needs at least one bidder")
    neg = Negotiation(task_id=task_id, task=task, bidders=tuple(dict.fromkeys(bidders)),
                      bid_deadline=now + policy.bid_seconds).note(now, "announced")
    return neg, [Effect("cfp", b, 1) for b in neg.bidders]


def due(neg: Negotiation) -> float | None:
    """When :func:`tick` has something to do for this negotiation (None: nothing until a message)."""
    if neg.state is NegotiationState.ANNOUNCED:
        return neg.cfp_at if neg.cfp_at is not None else neg.bid_deadline
    if neg.state is NegotiationState.AWARDED:
        return neg.commit_deadline
    return None


def _answered(neg: Negotiation) -> bool:
    return set(neg.bids) | set(neg.refused) >= set(neg.bidders)


def _bidding_open(neg: Negotiation, round_: int, now: float) -> bool:
    return (neg.state is NegotiationState.ANNOUNCED and neg.cfp_at is None and round_ == neg.round
            and now < neg.bid_deadline)


def record_bid(neg: Negotiation, bidder: str, round_: int, proposal: Proposal, expires: float, now: float,
               policy: ContractPolicy) -> tuple[Negotiation, list[Effect]]:
    """Count a bid if bidding is open for it; otherwise tell its bidder to release."""
    neg, effects = tick(neg, now, policy)
    answered = bidder in neg.bids or bidder in neg.refused
    if not _bidding_open(neg, round_, now) or bidder not in neg.bidders or answered:
        if answered and round_ == neg.round:  # a repeat of a counted answer: its reservation stands
            return neg, effects
        return neg, [*effects, Effect("reject", bidder, round_, "bid not counted (late, stale or unknown)")]
    bids = {**neg.bids, bidder: BidRecord(proposal=proposal, expires=expires, at=now)}
    neg = neg.model_copy(update={"bids": bids}).note(now, "bid", bidder=bidder, cost=proposal.cost)
    if _answered(neg):
        neg, more = _close_bidding(neg, now, policy, "every bidder answered")
        effects += more
    return neg, effects


def refuse(neg: Negotiation, bidder: str, round_: int, now: float, policy: ContractPolicy,
           reason: str = "") -> tuple[Negotiation, list[Effect]]:
    """A refusal: to bid (counted while bidding is open), or of an award (the winner declines:
    passed over, the next best awarded).  Anything else changes nothing."""
    neg, effects = tick(neg, now, policy)
    if _bidding_open(neg, round_, now) and bidder in neg.bidders and bidder not in neg.bids \
            and bidder not in neg.refused:
        neg = neg.model_copy(update={"refused": (*neg.refused, bidder)}).note(now, "refused", bidder=bidder,
                                                                               reason=reason)
        if _answered(neg):
            neg, more = _close_bidding(neg, now, policy, "every bidder answered")
            effects += more
    elif neg.state is NegotiationState.AWARDED and neg.awarded_to == bidder and neg.round == round_:
        neg, more = _pass_over(neg, now, policy, f"declined the award: {reason}")
        effects += more
    return neg, effects


def commit(neg: Negotiation, bidder: str, round_: int, now: float,
           policy: ContractPolicy) -> tuple[Negotiation, list[Effect], bool]:
    """A commit from ``bidder``: accepted (True) if it holds the award of this round (or committed
    already); on the first, every other bidder of the round is told to release."""
    neg, effects = tick(neg, now, policy)
    if neg.winner == bidder and neg.round == round_:
        return neg, effects, True  # a repeat: the same answer
    if neg.state is not NegotiationState.AWARDED or neg.awarded_to != bidder or neg.round != round_:
        return neg, effects, False
    neg = transition(neg, NegotiationState.COMMITTED, now, "committed", winner=bidder, commit_deadline=None)
    released = [b for b in neg.bids if b != bidder and b not in neg.passed_over]
    return neg, [*effects, *(Effect("reject", b, neg.round, "another bidder won") for b in released)], True


def done(neg: Negotiation, bidder: str, round_: int, result: Any, now: float) -> Negotiation:
    """The committed winner's result: DONE.  A repeat changes nothing."""
    if neg.state is NegotiationState.DONE and neg.winner == bidder and neg.round == round_:
        return neg
    _check_winner(neg, bidder, round_, "done")
    return transition(neg, NegotiationState.DONE, now, "done", result=result)


def failed(neg: Negotiation, bidder: str, round_: int, reason: str, now: float) -> Negotiation:
    """The committed winner could not perform the task: FAILED with its reason.  A repeat changes nothing."""
    if neg.state is NegotiationState.FAILED and neg.winner == bidder and neg.round == round_:
        return neg
    _check_winner(neg, bidder, round_, "failed")
    return transition(neg, NegotiationState.FAILED, now, "failed", reason=reason)


def _check_winner(neg: Negotiation, bidder: str, round_: int, event: str) -> None:
    if neg.winner != bidder or neg.round != round_:
        raise IllegalTransition(f"task {neg.task_id!r}: {bidder} (round {round_}) reported {event}, but "
                                f"{neg.winner or 'nobody'} is committed (round {neg.round})",
                                task_id=neg.task_id, state=neg.state.value, to=event, event=event)


def tick(neg: Negotiation, now: float, policy: ContractPolicy) -> tuple[Negotiation, list[Effect]]:
    """Apply what is due at ``now``: send a pending round's CFPs, close bidding, pass over a winner
    that did not commit in time.  Nothing due: ``neg`` unchanged, no effects."""
    effects: list[Effect] = []
    while (when := due(neg)) is not None and now >= when:
        if neg.state is NegotiationState.ANNOUNCED and neg.cfp_at is not None:
            neg = neg.model_copy(update={"cfp_at": None, "bid_deadline": now + policy.bid_seconds}).note(now, "cfp")
            effects += [Effect("cfp", b, neg.round) for b in neg.bidders]
        elif neg.state is NegotiationState.ANNOUNCED:
            neg, more = _close_bidding(neg, now, policy, "bid deadline")
            effects += more
        else:
            neg, more = _pass_over(neg, now, policy, "did not commit in time")
            effects += more
    return neg, effects


def _close_bidding(neg: Negotiation, now: float, policy: ContractPolicy, why: str) -> tuple[Negotiation, list[Effect]]:
    """Award the best usable bid, or announce again (or fail) when there is none."""
    usable = [b for b, rec in neg.bids.items() if b not in neg.passed_over and rec.expires > now]
    if usable:
        best = min(usable, key=lambda b: policy.rank(b, neg.bids[b].proposal))
        neg = neg.note(now, "closed", why=why) if neg.state is NegotiationState.ANNOUNCED else neg
        neg = transition(neg, NegotiationState.AWARDED, now, "awarded", awarded_to=best,
                         commit_deadline=now + policy.commit_seconds)
        return neg, [Effect("award", best, neg.round)]
    released = [Effect("reject", b, neg.round, "no award this round") for b in neg.bids if b not in neg.passed_over]
    if neg.round >= policy.max_rounds:
        return transition(neg, NegotiationState.FAILED, now, "failed", awarded_to=None, commit_deadline=None,
                          reason=f"no contractor after {neg.round} rounds ({why})"), released
    neg = transition(neg, NegotiationState.ANNOUNCED, now, "reannounced", round=neg.round + 1, bids={}, refused=(),
                     passed_over=(), awarded_to=None, commit_deadline=None, cfp_at=now + policy.retry_seconds,
                     bid_deadline=now + policy.retry_seconds + policy.bid_seconds)
    return neg, released


def _pass_over(neg: Negotiation, now: float, policy: ContractPolicy, why: str) -> tuple[Negotiation, list[Effect]]:
    loser, round_ = neg.awarded_to, neg.round
    assert loser is not None  # only called in AWARDED
    neg = neg.model_copy(update={"passed_over": (*neg.passed_over, loser)}).note(now, "passed_over", bidder=loser,
                                                                                 reason=why)
    neg, effects = _close_bidding(neg, now, policy, f"{loser} {why}")
    return neg, [Effect("reject", loser, round_, f"award withdrawn: {why}"), *effects]
