"""The durable approval queue: a Garrison agent holding human approval requests.

An agent's gateway (``_gateway``) that meets a high-risk action sends a
:class:`RequestApproval` (committed with the handler's changes, through the
outbox, effectively once) and answers the handler ``pending``.  People
decide with :class:`Approvals` (or ``garrison approvals approve|deny``): the
queue applies the pure transitions of :mod:`governance` (distinct approvers,
first denial stands, expiry) and, when a request is decided, sends an
:class:`ApprovalDecided` to the requesting agent, whose handler resumes the
work with ``await self.act(msg.action(), approval=msg.approval_id)``.  The
gateway then asks the queue for the request and executes only if it is
approved, bound to this very call (same arguments, policy version and config
version) and not expired, under the key ``approval:<id>``, so a decision
delivered twice, or an agent SIGKILLed between approval and execution,
executes the action once.

State (the queue's LMDB working state, checkpointed like any agent's)::

    req/<id>       the ApprovalRequest, as JSON data
    pending/<id>   present while the request is pending (what expiry sweeps)

Who decides is admitted first (``Agent.admit``): with ``AgentConfig.operators``
set on the queue, a decision must carry a credential signed for that very
request (``<queue>/<request id>``) by an operator with the approver role.
Each approval and denial that changes a request is also a ``decision`` record
in the queue's own audit log (``Agent.decide``): choice ``approve`` or ``deny``,
rationale with who and why, the request's id, agent, action and arguments, and
who with how they were established (``auth``) as context.

Invariants: a request id is stored once (a repeated request changes
nothing); a decision is sent to the requesting agent once per request, in
the same transaction that records it.  Expiry is swept whenever the queue
handles a message, and by a timer: a pending request past its time to live
becomes EXPIRED and its agent gets the decision within ``sweep_every``
seconds of its expiry, even if nobody touches the queue.  The timer only
tells the queue a :class:`SweepApprovals`; the sweep itself is a handler,
so it commits (and sends the decisions) like any other.
"""

from __future__ import annotations

import time
from typing import Any

from audit import OperatorKey
from governance import Action, ApprovalError, ApprovalRequest, ApprovalState, approve, deny, expire
from protocols import Message, default_registry

from ._agent import Agent, handler
from ._gatekeeper import credential_for
from ._ticker import Ticker

__all__ = ["ApprovalDecided", "ApprovalQueue", "Approvals", "DecideApproval", "GetApproval", "ListApprovals",
           "RequestApproval", "SweepApprovals"]


class RequestApproval(Message, name="garrison.approval.request"):
    """From a gateway: hold ``request`` (an ApprovalRequest's data) for people to decide."""

    request: dict[str, Any]


class DecideApproval(Message, name="garrison.approval.decide"):
    """From a person: ``verdict`` is ``approve`` or ``deny`` (``why`` required for a denial).

    ``credential``: ``who``'s signed credential for ``verdict`` on ``<queue>/<approval_id>``
    (``audit.Credential``), required when the queue has an operators file.
    """

    approval_id: str
    verdict: str
    who: str
    why: str = ""
    credential: dict[str, Any] | None = None


class GetApproval(Message, name="garrison.approval.get"):
    approval_id: str


class ListApprovals(Message, name="garrison.approval.list"):
    """Requests in ``state`` (None: every one), oldest first."""

    state: str | None = None
    limit: int = 100


class SweepApprovals(Message, name="garrison.approval.sweep"):
    """From the queue's own timer: expire what is past its time to live."""


class ApprovalDecided(Message, name="garrison.approval.decided"):
    """To the requesting agent: its request was approved, denied or expired."""

    approval_id: str
    state: str
    action_tag: str
    arguments: dict[str, Any]
    reason: str = ""

    def action(self) -> Action:
        """The action the request was for, rebuilt from its tag and arguments."""
        cls, body = default_registry.resolve(self.action_tag, self.arguments)
        return cls.model_validate(body)  # type: ignore[return-value]


class ApprovalQueue(Agent):
    """Holds approval requests; sends each decision to the agent that asked (see module docstring).

    ``sweep_every``: how often the expiry timer looks (seconds); it tells the
    queue to sweep only once the earliest pending request is due.
    """

    def __init__(self, sweep_every: float = 1.0) -> None:
        self.sweep_every = sweep_every
        #: Its ``due``: when the earliest pending request expires (None: none pending); ``_pending``: how
        #: many are pending.  Kept by the handlers (``_recount``), read by the ticker and ``gauges``.
        self._ticker = Ticker(sweep_every)
        self._pending = 0

    def on_start(self) -> None:
        self._recount()
        me = self.lookup(self.agent_id)
        self._ticker.start(f"garrison-approvals-{self.agent_id}", lambda: me.tell(SweepApprovals()))

    def on_stop(self) -> None:
        self._ticker.stop()

    @handler
    def swept(self, msg: SweepApprovals) -> int:
        """Expire what is due; the number still pending."""
        self._sweep(time.time())
        return len(self.state.keys("pending/"))

    @handler
    def request(self, msg: RequestApproval) -> dict[str, Any]:
        req = ApprovalRequest.model_validate(msg.request)
        self._sweep(time.time())
        if f"req/{req.id}" not in self.state:
            self._save(req)
            self._recount()
        return self._load(req.id).model_dump(mode="json")

    @handler
    def decide_approval(self, msg: DecideApproval) -> dict[str, Any]:
        if msg.verdict not in ("approve", "deny"):
            raise ValueError(f"verdict must be 'approve' or 'deny', not {msg.verdict!r}")
        # Who decides is checked first (the approver role, a credential signed for this very request).
        me = self.admit(msg.verdict, msg.credential if msg.credential is not None else msg.who,
                        on=f"{self.agent_id}/{msg.approval_id}")
        now = time.time()
        self._sweep(now)
        req = self._load(msg.approval_id)
        if msg.verdict == "approve":
            decided = approve(req, me.name, now)
        else:
            decided = deny(req, me.name, msg.why, now)
        if decided != req:  # recorded in the queue's audit log too: a person's decision, with who
            self.decide(msg.verdict, options=("approve", "deny"), keep_context=True,
                        rationale=f"{msg.verdict} by {me.name}" + (f": {msg.why}" if msg.why else ""),
                        context={"approval": req.id, "agent": req.agent_id, "action": req.action,
                                 "arguments": req.arguments, "who": me.name, "auth": me.auth,
                                 "state": decided.state.value})
            self._save(decided)
            if decided.state is not ApprovalState.PENDING:
                self._notify(decided)
            self._recount()
        return decided.model_dump(mode="json")

    @handler
    def get(self, msg: GetApproval) -> dict[str, Any]:
        self._sweep(time.time())
        return self._load(msg.approval_id).model_dump(mode="json")

    @handler
    def listing(self, msg: ListApprovals) -> list[dict[str, Any]]:
        self._sweep(time.time())
        reqs = [v for _, v in self.state.scan("req/")]
        if msg.state is not None:
            reqs = [r for r in reqs if r["state"] == msg.state]
        reqs.sort(key=lambda r: r["created"])
        return reqs[: msg.limit]

    def _load(self, approval_id: str) -> ApprovalRequest:
        raw = self.state.get(f"req/{approval_id}")
        if raw is None:
            raise ApprovalError(f"no approval request {approval_id!r} in queue {self.agent_id}",
                                request=approval_id)
        return ApprovalRequest.model_validate(raw)

    def _save(self, req: ApprovalRequest) -> None:
        self.state.put(f"req/{req.id}", req.model_dump(mode="json"))
        if req.state is ApprovalState.PENDING:
            self.state.put(f"pending/{req.id}", 1)
        else:
            self.state.delete(f"pending/{req.id}")

    def _sweep(self, now: float) -> None:
        for key in self.state.keys("pending/"):
            req = self._load(key.split("/", 1)[1])
            lapsed = expire(req, now)
            if lapsed is not req:
                self._save(lapsed)
                self._notify(lapsed)
        self._recount()

    def _recount(self) -> None:
        """The ticker's ``due`` and ``_pending`` from the state: the earliest expiry, and how many requests wait."""
        expiries = [self._load(k.split("/", 1)[1]).expires for k in self.state.keys("pending/")]
        self._ticker.due, self._pending = min(expiries, default=None), len(expiries)

    def gauges(self) -> dict[str, float]:
        """``garrison_approvals_pending``: requests waiting for people (as of the last handled message)."""
        return {"garrison_approvals_pending": self._pending}

    def _notify(self, req: ApprovalRequest) -> None:
        reason = {ApprovalState.APPROVED: f"approved by {', '.join(req.approvers())}",
                  ApprovalState.DENIED: f"denied by {req.denial.who}: {req.denial.why}" if req.denial else "denied",
                  ApprovalState.EXPIRED: f"expired at {req.expires}"}.get(req.state, "")
        # Not the deadline of the approve or deny that decided it: the decision must reach an agent that
        # is down for longer than that person's ask waited.
        self.send(req.agent_id, ApprovalDecided(approval_id=req.id, state=req.state.value, action_tag=req.action,
                                                arguments=req.arguments, reason=reason), inherit_deadline=False)


class Approvals:
    """People's side of a queue, in Python: what ``garrison approvals`` calls.

    ``system`` is a :class:`~runtime.System` (or anything with ``lookup``);
    ``queue`` the approval queue agent's id.
    """

    def __init__(self, system: Any, queue: str) -> None:
        self._system = system
        self.queue = queue

    def _ask(self, msg: Message) -> Any:
        return self._system.lookup(self.queue).ask(msg, timeout=30)

    def list(self, state: str | None = "pending", limit: int = 100) -> list[dict[str, Any]]:
        return self._ask(ListApprovals(state=state, limit=limit))

    def show(self, approval_id: str) -> dict[str, Any]:
        return self._ask(GetApproval(approval_id=approval_id))

    def approve(self, approval_id: str, *, who: OperatorKey | str) -> dict[str, Any]:
        """``who`` approves: an ``audit.OperatorKey`` with the approver role (required when the queue
        has an operators file), or a name (recorded as ``unverified``)."""
        return self._ask(self._decision(approval_id, "approve", who, ""))

    def deny(self, approval_id: str, *, who: OperatorKey | str, why: str) -> dict[str, Any]:
        return self._ask(self._decision(approval_id, "deny", who, why))

    def _decision(self, approval_id: str, verdict: str, who: OperatorKey | str, why: str) -> DecideApproval:
        signed = credential_for(who, verdict, f"{self.queue}/{approval_id}")
        return DecideApproval(approval_id=approval_id, verdict=verdict, why=why,
                              who=who.name if isinstance(who, OperatorKey) else who,
                              credential=signed if isinstance(who, OperatorKey) else None)
