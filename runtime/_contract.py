"""The contract net as Garrison agents: :class:`ContractManager`, :class:`Contractor`, and their messages.

The rules are in :mod:`._contract_logic` (pure, with an injected clock); this module maps messages onto
them over each agent's ``self.state`` at ``time.time()``, and the effects they return onto ``self.send``
(the durable outbox: a message leaves only if the handler's changes commit, is retried until delivered,
in order per pair, effectively once).  Public through :mod:`runtime.contracts`.

The conversation of one task (``round`` numbers an announcement; every message carries it)::

    driver ──Announce──► manager ──CallForProposals──► each bidder
                                 ◄──Bid (reserves capacity) or Refuse──
                  (bidding closes at the deadline, or when every bidder answered)
                         manager ──Award──► best bidder ──ask Commit──► manager: accepted?
                                                     yes: perform(task) ──Done / Failed──► manager
                                                     no:  release (another bidder holds the award)
                         manager ──Reject──► the other bidders, once the winner committed: release

Timeouts: the manager's own timer tells it a :class:`SweepContracts` whenever a bid or commit deadline
(kept in its state, so they survive a restart) is due: bidding closes, a winner that did not commit is
passed over (told to release) and the next best bid is awarded, or the task is announced again.  A
contractor's timer releases a reservation nobody awarded before the bid's ``expires``; an award that
comes after that is declined (a :class:`Refuse` to the award), and the manager awards the next best.

Crashes: every message but the commit goes through an outbox, so an agent SIGKILLed in the middle gets
what it was sent once it is back, and what it had sent goes on.  The commit is an ask the manager answers
from its state, idempotently: a contractor killed after its commit was accepted but before it recorded the
performance has the award redelivered, commits again (accepted again) and performs once, in the handler
that sends ``Done`` — the performance and the ``Done`` commit together.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from pydantic import Field

from protocols import Message

from ._agent import Agent, handler
from ._contract_logic import (
    ContractPolicy,
    Effect,
    Negotiation,
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
)
from ._ticker import Ticker
from .exceptions import UnknownTask

log = logging.getLogger("garrison.contracts")

# -- messages (public through ``runtime.contracts``) -------------------------------------------------


class Announce(Message, name="garrison.contract.announce"):
    """To a manager: negotiate ``task`` (plain data) among ``bidders`` (default: the manager's own).
    Reply: ``{"task_id", "state", "duplicate"}``; a task id already announced changes nothing."""

    task_id: str = Field(min_length=1)
    task: Any = None
    bidders: list[str] | None = None


class CallForProposals(Message, name="garrison.contract.cfp"):
    """To a bidder: bid for ``task`` by ``bid_deadline``; a bid is awarded by ``award_by`` at the latest."""

    task_id: str
    round: int
    task: Any = None
    manager: str
    bid_deadline: float
    award_by: float


class Bid(Message, name="garrison.contract.bid"):
    """To the manager: ``bidder`` offers ``proposal`` and holds its capacity for it until ``expires``."""

    task_id: str
    round: int
    bidder: str
    proposal: Proposal
    expires: float


class Refuse(Message, name="garrison.contract.refuse"):
    """To the manager: ``bidder`` will not bid for this round, or declines the award it got."""

    task_id: str
    round: int
    bidder: str
    reason: str = ""


class Award(Message, name="garrison.contract.award"):
    """To the best bidder: the task is yours if you commit (ask :class:`Commit`) by ``commit_deadline``."""

    task_id: str
    round: int
    task: Any = None
    manager: str
    commit_deadline: float


class Commit(Message, name="garrison.contract.commit"):
    """Asked of the manager by an awarded bidder.  Reply: ``{"accepted": bool, "state"}``; perform only if
    accepted.  Asking again gets the same answer."""

    task_id: str
    round: int
    bidder: str


class Reject(Message, name="garrison.contract.reject"):
    """To a bidder: release what you hold for this task and round (you lost, or the award was withdrawn)."""

    task_id: str
    round: int
    reason: str = ""


class Done(Message, name="garrison.contract.done"):
    """To the manager: the committed winner performed the task; ``result`` is what ``perform`` returned."""

    task_id: str
    round: int
    bidder: str
    result: Any = None


class Failed(Message, name="garrison.contract.failed"):
    """To the manager: the committed winner could not perform the task (``perform`` raised)."""

    task_id: str
    round: int
    bidder: str
    reason: str = ""


class GetNegotiation(Message, name="garrison.contract.get"):
    """Reply: the task's negotiation record (``state``, ``round``, ``bids``, ``winner``, ``result``,
    ``history``...); raises ``UnknownTask``."""

    task_id: str


class ListNegotiations(Message, name="garrison.contract.list"):
    """Reply: ``{task_id: state}`` of every task (or only those in ``state``)."""

    state: str | None = None


class SweepContracts(Message, name="garrison.contract.sweep"):
    """From the manager's own timer: apply the deadlines that are due."""


class ContractorStatus(Message, name="garrison.contract.contractor_status"):
    """Reply: ``{"capacity", "held": {task_id: round}, "performed": {task_id: round}}``."""


class SweepReservations(Message, name="garrison.contract.sweep_reservations"):
    """From a contractor's own timer: release reservations nobody awarded in time."""


# -- the manager -------------------------------------------------------------------------------------


class ContractManager(Agent):
    """Announces tasks to bidders, awards each to the best bid, sees it committed and done.

    ``bidders``: the default bidder ids of an :class:`Announce` that names none.  ``policy``: a
    :class:`ContractPolicy` or its fields as a dict (the class attribute ``policy`` otherwise; a
    subclass sets its own ``rank`` there).  ``tick``: how often the deadline timer looks (seconds).
    State: ``neg/<task id>`` the negotiation (JSON data), ``open/<task id>`` its next deadline while
    it is not finished.  Subclasses may override :meth:`on_done` and :meth:`on_failed`.
    """

    policy: ClassVar[ContractPolicy] = ContractPolicy()
    bidders: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bidders: list[str] | None = None, policy: dict[str, Any] | ContractPolicy | None = None,
                 tick: float = 0.1) -> None:
        if isinstance(policy, dict):
            policy = ContractPolicy(**policy)
        self.contract_policy = policy or type(self).policy
        self.default_bidders = tuple(bidders if bidders is not None else type(self).bidders)
        self._ticker = Ticker(tick)

    # Hooks, run in the handler that records the outcome (their state changes commit with it).
    def on_done(self, negotiation: dict[str, Any]) -> None:
        """A task is DONE (``negotiation["result"]`` is the result)."""

    def on_failed(self, negotiation: dict[str, Any]) -> None:
        """A task FAILED (``negotiation["reason"]`` says why)."""

    def on_start(self) -> None:
        self._recount()
        me = self.lookup(self.agent_id)
        self._ticker.start(f"garrison-contracts-{self.agent_id}", lambda: me.tell(SweepContracts()))

    def on_stop(self) -> None:
        self._ticker.stop()

    @handler
    def announced(self, msg: Announce) -> dict[str, Any]:
        old = self.state.get(f"neg/{msg.task_id}")
        if old is not None:
            return {"task_id": msg.task_id, "state": old["state"], "duplicate": True}
        neg, effects = announce(msg.task_id, msg.task, msg.bidders or self.default_bidders, time.time(),
                                self.contract_policy)
        self._save(neg, effects)
        return {"task_id": msg.task_id, "state": neg.state.value, "duplicate": False}

    @handler
    def bid(self, msg: Bid) -> None:
        neg = self._load(msg.task_id)
        self._save(*record_bid(neg, msg.bidder, msg.round, msg.proposal, msg.expires, time.time(),
                               self.contract_policy))

    @handler
    def refused(self, msg: Refuse) -> None:
        neg = self._load(msg.task_id)
        self._save(*refuse(neg, msg.bidder, msg.round, time.time(), self.contract_policy, msg.reason))

    @handler
    def committed(self, msg: Commit) -> dict[str, Any]:
        neg, effects, accepted = commit(self._load(msg.task_id), msg.bidder, msg.round, time.time(),
                                        self.contract_policy)
        self._save(neg, effects)
        return {"accepted": accepted, "state": neg.state.value}

    @handler
    def finished(self, msg: Done) -> None:
        before = self._load(msg.task_id)
        neg = done(before, msg.bidder, msg.round, msg.result, time.time())
        self._save(neg, [])
        if neg is not before:
            self.on_done(neg.model_dump(mode="json"))

    @handler
    def gave_up(self, msg: Failed) -> None:
        before = self._load(msg.task_id)
        neg = failed(before, msg.bidder, msg.round, msg.reason, time.time())
        self._save(neg, [])
        if neg is not before:
            self.on_failed(neg.model_dump(mode="json"))

    @handler
    def swept(self, msg: SweepContracts) -> int:
        """Apply every deadline that is due; the number of tasks still open."""
        now = time.time()
        for key, when in list(self.state.scan("open/")):
            if when is not None and when <= now:
                before = self._load(key.split("/", 1)[1])
                neg, effects = tick(before, now, self.contract_policy)
                self._save(neg, effects)
                if neg.state is NegotiationState.FAILED and before.state is not NegotiationState.FAILED:
                    self.on_failed(neg.model_dump(mode="json"))
        self._recount()
        return len(self.state.keys("open/"))

    @handler
    def get(self, msg: GetNegotiation) -> dict[str, Any]:
        return self._load(msg.task_id).model_dump(mode="json")

    @handler
    def listing(self, msg: ListNegotiations) -> dict[str, str]:
        return {k.split("/", 1)[1]: v["state"] for k, v in self.state.scan("neg/")
                if msg.state is None or v["state"] == msg.state}

    def _load(self, task_id: str) -> Negotiation:
        raw = self.state.get(f"neg/{task_id}")
        if raw is None:
            raise UnknownTask(f"no task {task_id!r} at contract manager {self.agent_id}", task_id=task_id)
        return Negotiation.model_validate(raw)

    def _save(self, neg: Negotiation, effects: list[Effect]) -> None:
        """Store ``neg`` and send its ``effects``: both commit with the handler, or neither happens."""
        self.state.put(f"neg/{neg.task_id}", neg.model_dump(mode="json"))
        when = due(neg)
        if when is None:
            self.state.delete(f"open/{neg.task_id}")
        else:
            self.state.put(f"open/{neg.task_id}", when)
            if self._ticker.due is None or when < self._ticker.due:
                self._ticker.due = when
        for effect in effects:
            # The negotiation's own deadlines (in its state) govern it, not the deadline of whatever
            # message this handler handles: an Announce asked with a short timeout must not expire
            # its task's Award, or the winner's Done, in transit.
            self.send(effect.to, self._message(neg, effect), inherit_deadline=False)

    def _message(self, neg: Negotiation, effect: Effect) -> Message:
        if effect.kind == "cfp":
            policy = self.contract_policy
            return CallForProposals(task_id=neg.task_id, round=effect.round, task=neg.task, manager=self.agent_id,
                                    bid_deadline=neg.bid_deadline,
                                    award_by=policy.award_by(neg.bid_deadline, len(neg.bidders)))
        if effect.kind == "award":
            return Award(task_id=neg.task_id, round=effect.round, task=neg.task, manager=self.agent_id,
                         commit_deadline=neg.commit_deadline or 0.0)
        return Reject(task_id=neg.task_id, round=effect.round, reason=effect.reason)

    def _recount(self) -> None:
        self._ticker.due = min((w for _, w in self.state.scan("open/") if w is not None), default=None)


# -- the contractor ----------------------------------------------------------------------------------


class Contractor(Agent):
    """Bids for tasks within its capacity and performs those it wins.  Subclasses implement
    :meth:`perform`, and may override :meth:`propose` (pure and deterministic).

    ``capacity``: how many tasks it may hold at once (bids outstanding plus the one being performed).
    ``hold_seconds``: the longest it holds a reservation for a bid (less if the CFP's ``award_by`` is
    sooner).  State: ``held/<task id>`` the reservation (``round``, ``manager``, ``expires``),
    ``performed/<task id>`` the round it performed the task in.
    """

    capacity: ClassVar[int] = 1
    hold_seconds: ClassVar[float] = 300.0

    def __init__(self, capacity: int | None = None, hold_seconds: float | None = None, tick: float = 0.1) -> None:
        self.slots = capacity if capacity is not None else type(self).capacity
        self.hold_for = hold_seconds if hold_seconds is not None else type(self).hold_seconds
        self._ticker = Ticker(tick)

    def propose(self, task: Any, held: int) -> Proposal | None:
        """A bid for ``task`` while holding ``held`` other tasks (always fewer than the capacity), or None
        to refuse.  The default: cost is the load it would have, ``(held + 1) / capacity``, so a
        contractor with more room bids lower."""
        return Proposal(cost=(held + 1) / self.slots, capacity=self.slots - held - 1)

    def perform(self, task: Any) -> Any:
        """Do the task; what it returns is the result (plain data).  Raising reports it ``Failed``."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement perform(task)")

    def on_start(self) -> None:
        self._recount()
        me = self.lookup(self.agent_id)
        self._ticker.start(f"garrison-contractor-{self.agent_id}", lambda: me.tell(SweepReservations()))

    def on_stop(self) -> None:
        self._ticker.stop()

    def _report(self, manager: str, msg: Message) -> None:
        """Send ``msg`` to the manager, without the deadline of the message handled: a bid, a refusal or a
        task's outcome is governed by the negotiation's deadlines, and a ``Done`` must not expire in transit
        because whoever announced the task asked with a short timeout."""
        self.send(manager, msg, inherit_deadline=False)

    @handler
    def called(self, msg: CallForProposals) -> None:
        now, held = time.time(), self.state.keys("held/")
        proposal = None
        if f"held/{msg.task_id}" in self.state or f"performed/{msg.task_id}" in self.state:
            reason = "already holds or performed this task"
        elif len(held) >= self.slots:
            reason = f"at capacity ({len(held)} of {self.slots})"
        else:
            proposal = self.propose(msg.task, len(held))
            reason = "declined by propose()"
        if proposal is None:
            self._report(msg.manager, Refuse(task_id=msg.task_id, round=msg.round, bidder=self.agent_id, reason=reason))
            return
        expires = min(msg.award_by, now + self.hold_for)
        self.state.put(f"held/{msg.task_id}", {"round": msg.round, "manager": msg.manager, "expires": expires})
        self._recount()
        self._report(msg.manager, Bid(task_id=msg.task_id, round=msg.round, bidder=self.agent_id, proposal=proposal,
                                      expires=expires))

    @handler
    async def awarded(self, msg: Award) -> None:
        held = self.state.get(f"held/{msg.task_id}")
        if held is None or held["round"] != msg.round:
            self._report(msg.manager, Refuse(task_id=msg.task_id, round=msg.round, bidder=self.agent_id,
                                             reason="reservation released before the award came"))
            return
        answer = await self.lookup(msg.manager).ask_async(
            Commit(task_id=msg.task_id, round=msg.round, bidder=self.agent_id), timeout=30)
        self.state.delete(f"held/{msg.task_id}")
        self._recount()
        if not answer["accepted"]:
            return
        # Invariant: performed only under a commit the manager accepted, recorded with the Done it sends.
        self.state.put(f"performed/{msg.task_id}", msg.round)
        try:
            result = self.perform(msg.task)
        except Exception as exc:  # noqa: BLE001 - whatever perform raised, the task failed: report it
            self._report(msg.manager, Failed(task_id=msg.task_id, round=msg.round, bidder=self.agent_id,
                                             reason=f"{type(exc).__name__}: {exc}"))
            return
        self._report(msg.manager, Done(task_id=msg.task_id, round=msg.round, bidder=self.agent_id, result=result))

    @handler
    def rejected(self, msg: Reject) -> None:
        held = self.state.get(f"held/{msg.task_id}")
        if held is not None and held["round"] == msg.round:
            self.state.delete(f"held/{msg.task_id}")
            self._recount()

    @handler
    def swept(self, msg: SweepReservations) -> int:
        """Release the reservations past their ``expires``; the number still held."""
        now = time.time()
        for key, held in list(self.state.scan("held/")):
            if held["expires"] <= now:
                self.state.delete(key)
        self._recount()
        return len(self.state.keys("held/"))

    @handler
    def status(self, msg: ContractorStatus) -> dict[str, Any]:
        return {"capacity": self.slots,
                "held": {k.split("/", 1)[1]: v["round"] for k, v in self.state.scan("held/")},
                "performed": {k.split("/", 1)[1]: v for k, v in self.state.scan("performed/")}}

    def _recount(self) -> None:
        self._ticker.due = min((h["expires"] for _, h in self.state.scan("held/")), default=None)
