"""One human approval request and its lifecycle, as pure data and pure transitions.

A request is frozen; every transition returns a new one.  Times are plain
floats (seconds) the caller passes as ``now``: the module reads no clock.

States (``state`` as stored; :meth:`ApprovalRequest.state_at` adds time)::

    PENDING --approve (enough distinct approvers)--> APPROVED
    PENDING --deny--> DENIED
    PENDING --expire (now >= expires)--> EXPIRED

- PENDING: waits for ``approvals_required`` distinct approvers.
- APPROVED: the action may execute once, until ``expires``; after that the
  approval has lapsed (``state_at`` says EXPIRED, :func:`check` refuses).
- DENIED: final; the first denial stands.  Any one approver can deny, also
  after another one approved a request that needs two.
- EXPIRED: final; nobody decided in time.

Rules:

- An approval is bound to :func:`binding_hash` of (action tag, argument
  digest, policy version, agent config version).  :func:`check` recomputes it
  from the action the agent is about to execute: any difference voids it.
- Approvers are distinct by identity, compared after stripping and
  case-folding (``"Alice"`` and ``"alice "`` are one person).  Approving twice
  is idempotent, not a second approval; so is approving a request that is
  already approved.  The requesting agent cannot approve its own request.
- Approving or denying a request that is denied or expired (also by time
  alone) raises :class:`~governance.ApprovalError` naming the state; denying an
  approved request raises too (it may already have executed).
- A prohibited action is never approvable: :func:`new_request` refuses it, and
  :func:`check` refuses it whatever the stored state says (a forged record).
- A stored request is consistent with its state (an APPROVED one has enough
  distinct approvers, a DENIED one has its denial...): loading one that is
  not raises ApprovalError, so a hand-edited record does not pass as approved.
- The request id is the caller's, so a caller that crashed and asks again
  for the same call (same correlation id) can find the same request.
"""

from __future__ import annotations

import enum
import hashlib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from protocols import canonical_bytes

from ._action import Action, Risk, argument_digest
from ._outcome import Outcome
from ._risk import RiskPolicy, effective_risk
from .exceptions import ApprovalError

__all__ = [
    "Approval",
    "ApprovalRequest",
    "ApprovalState",
    "Clearance",
    "Denial",
    "Verdict",
    "approve",
    "binding_hash",
    "check",
    "deny",
    "expire",
    "new_request",
]

#: Domain separation: a binding hash can never equal another kind of digest of the same strings.
_BINDING = "garrison.approval.binding/1"
VOID_REASON = "void: arguments/policy/config changed"


class ApprovalState(str, enum.Enum):
    """Where an approval request is in its lifecycle (module docstring)."""

    PENDING = "pending"      # waits for approvers
    APPROVED = "approved"    # enough distinct approvers said yes; executes once before it expires
    DENIED = "denied"        # an approver said no (final)
    EXPIRED = "expired"      # nobody decided before ``expires`` (final)


class Approval(BaseModel):
    """One approver's yes: who, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    who: str
    at: float


class Denial(BaseModel):
    """The approver's no: who, when and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    who: str
    at: float
    why: str


def _identity(who: Any) -> str:
    if not isinstance(who, str) or not who.strip():
        raise ApprovalError(f"an approver is named by a non-empty identity string, got {who!r}")
    return who.strip()


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


class ApprovalRequest(BaseModel):
    """One request for human approval of one action call (module docstring for the rules)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    agent_id: str
    action: str                     # the action's tag, "name@version"
    arguments: dict[str, Any]       # the action's model_dump(mode="json"), for the human to read
    binding_hash: str
    context: str = ""               # what the agent was doing, for the human to read
    policy_version: str
    config_version: str
    created: float
    expires: float
    approvals_required: int
    approvals: tuple[Approval, ...] = ()
    denial: Denial | None = None
    state: ApprovalState = ApprovalState.PENDING

    @field_validator("id", "agent_id", "action", "binding_hash", "policy_version", "config_version")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalRequest:
        if not (math.isfinite(self.created) and math.isfinite(self.expires) and self.expires > self.created):
            raise ValueError(f"expires ({self.expires}) must come after created ({self.created})")
        if self.approvals_required < 1:
            raise ValueError(f"approvals_required must be >= 1, got {self.approvals_required}")
        who = [a.who.strip().casefold() for a in self.approvals]
        if len(set(who)) != len(who) or not all(who):
            raise ValueError("approvals come from distinct, named approvers")
        if any(_same(a.who, self.agent_id) for a in self.approvals):
            raise ValueError("the requesting agent cannot approve its own request")
        enough = len(who) >= self.approvals_required
        if (self.state is ApprovalState.DENIED) != (self.denial is not None):
            raise ValueError("a request has a denial exactly when it is denied")
        if (self.state is ApprovalState.APPROVED) != enough:
            raise ValueError(f"{self.state.value} with {len(who)} of {self.approvals_required} approvals")
        return self

    # Defined after the other validators, so it wraps them all (pydantic nests them in order).
    @model_validator(mode="wrap")
    @classmethod
    def _as_approval_error(cls, data: Any, handler: Any) -> ApprovalRequest:
        try:
            return handler(data)
        except ValidationError as exc:
            raise ApprovalError(f"invalid approval request: {exc}") from exc

    def state_at(self, now: float) -> ApprovalState:
        """The state at time ``now``: a pending or approved request past ``expires`` is EXPIRED."""
        if self.state in (ApprovalState.PENDING, ApprovalState.APPROVED) and now >= self.expires:
            return ApprovalState.EXPIRED
        return self.state

    def approvers(self) -> tuple[str, ...]:
        """Who approved, in order."""
        return tuple(a.who for a in self.approvals)


def binding_hash(action: Action, policy_version: str, config_version: str) -> str:
    """sha256 hex binding an approval to this action, these arguments, this policy and this agent config."""
    parts = [_BINDING, action.type_tag(), argument_digest(action), str(policy_version), str(config_version)]
    return hashlib.sha256(canonical_bytes(parts)).hexdigest()


def new_request(action: Action, *, request_id: str, agent_id: str, policy: RiskPolicy, config_version: str,
                now: float, context: str = "") -> ApprovalRequest:
    """A PENDING request for ``action``, valid for ``policy.approval_ttl`` seconds from ``now``.

    Raises ApprovalError for a prohibited action: no approval can unlock it.
    """
    if effective_risk(action, policy) is Risk.PROHIBITED:
        raise ApprovalError(f"{action.type_tag()} is prohibited: it is never approvable", action=action.type_tag())
    return ApprovalRequest(
        id=request_id, agent_id=agent_id, action=action.type_tag(), arguments=action.model_dump(mode="json"),
        binding_hash=binding_hash(action, policy.version, config_version), context=context,
        policy_version=policy.version, config_version=str(config_version), created=now,
        expires=now + policy.approval_ttl, approvals_required=policy.approvals_required,
    )


def _refuse(req: ApprovalRequest, doing: str, state: ApprovalState) -> ApprovalError:
    return ApprovalError(f"cannot {doing} request {req.id}: it is {state.value}", request=req.id, state=state.value)


def _replace(req: ApprovalRequest, **changes: Any) -> ApprovalRequest:
    # Re-validated, so a transition can never produce an inconsistent request.
    return ApprovalRequest.model_validate({**req.model_dump(), **changes})


def approve(req: ApprovalRequest, who: str, now: float) -> ApprovalRequest:
    """``req`` with ``who``'s approval; APPROVED once enough distinct approvers said yes."""
    who = _identity(who)
    if _same(who, req.agent_id):
        raise ApprovalError(f"agent {req.agent_id} cannot approve its own request {req.id}", request=req.id)
    state = req.state_at(now)
    if state in (ApprovalState.DENIED, ApprovalState.EXPIRED):
        raise _refuse(req, "approve", state)
    if state is ApprovalState.APPROVED or any(_same(who, a.who) for a in req.approvals):
        return req  # idempotent: a duplicate approval is not a second approver
    approvals = (*req.approvals, Approval(who=who, at=now))
    done = len(approvals) >= req.approvals_required
    return _replace(req, approvals=approvals, state=ApprovalState.APPROVED if done else ApprovalState.PENDING)


def deny(req: ApprovalRequest, who: str, why: str, now: float) -> ApprovalRequest:
    """``req`` DENIED by ``who`` for ``why``; a request already denied keeps its first denial."""
    who = _identity(who)
    if not isinstance(why, str) or not why.strip():
        raise ApprovalError(f"a denial of request {req.id} says why", request=req.id)
    state = req.state_at(now)
    if state is ApprovalState.DENIED:
        return req
    if state is not ApprovalState.PENDING:
        raise _refuse(req, "deny", state)
    return _replace(req, denial=Denial(who=who, at=now, why=why), state=ApprovalState.DENIED)


def expire(req: ApprovalRequest, now: float) -> ApprovalRequest:
    """``req`` EXPIRED when it is still pending at or after ``expires``; otherwise ``req`` unchanged."""
    if req.state is ApprovalState.PENDING and now >= req.expires:
        return _replace(req, state=ApprovalState.EXPIRED)
    return req


class Clearance(str, enum.Enum):
    """What :func:`check` says about executing an action under a request."""

    EXECUTE = "execute"        # approved, bound to this very call, not expired: execute it (once)
    PENDING = "pending"        # still waiting for approvers
    DENIED = "denied"          # an approver said no
    EXPIRED = "expired"        # nobody decided in time, or the approval lapsed before execution
    VOID = "void"              # the approval is not for this call (arguments, policy or config changed)
    PROHIBITED = "prohibited"  # the action is prohibited: no request, however stored, clears it


class Verdict(BaseModel):
    """The answer of :func:`check`: a clearance and why, convertible to the agent's :class:`Outcome`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clearance: Clearance
    reason: str
    approval_id: str

    @property
    def may_execute(self) -> bool:
        return self.clearance is Clearance.EXECUTE

    def outcome(self, correlation_id: str) -> Outcome | None:
        """The outcome the agent receives instead of executing; None when it may execute."""
        c, aid = self.clearance, self.approval_id
        if c is Clearance.EXECUTE:
            return None
        if c is Clearance.PENDING:
            return Outcome.awaiting(correlation_id, aid, self.reason)
        if c is Clearance.EXPIRED:
            return Outcome.expiry(correlation_id, self.reason, approval_id=aid)
        if c is Clearance.PROHIBITED:
            return Outcome.refusal(correlation_id, self.reason)
        return Outcome.denial(correlation_id, self.reason, approval_id=aid)


def check(req: ApprovalRequest, action: Action, policy: RiskPolicy, config_version: str, now: float) -> Verdict:
    """May ``action`` execute now under ``req``, with the agent's current ``policy`` and ``config_version``?

    Checked in order: prohibited, bound to this call (else VOID), denied,
    expired (by state or by time), enough distinct approvers for the current
    policy, pending.  Only a request passing all of them clears EXECUTE.
    """
    def verdict(clearance: Clearance, reason: str) -> Verdict:
        return Verdict(clearance=clearance, reason=reason, approval_id=req.id)

    if effective_risk(action, policy) is Risk.PROHIBITED:
        return verdict(Clearance.PROHIBITED, f"{action.type_tag()} is prohibited: no approval unlocks it")
    if binding_hash(action, policy.version, config_version) != req.binding_hash:
        return verdict(Clearance.VOID, VOID_REASON)
    state = req.state_at(now)
    if state is ApprovalState.DENIED:
        assert req.denial is not None  # Invariant: a denied request has its denial (validated on load)
        return verdict(Clearance.DENIED, f"denied by {req.denial.who}: {req.denial.why}")
    if state is ApprovalState.EXPIRED:
        return verdict(Clearance.EXPIRED, f"approval request {req.id} expired at {req.expires}")
    if state is ApprovalState.PENDING:
        have = len(req.approvals)
        return verdict(Clearance.PENDING, f"awaiting approval ({have} of {req.approvals_required})")
    if len(req.approvals) < policy.approvals_required:
        return verdict(Clearance.VOID, f"{VOID_REASON} (policy needs {policy.approvals_required} approvers)")
    return verdict(Clearance.EXECUTE, f"approved by {', '.join(req.approvers())}")
