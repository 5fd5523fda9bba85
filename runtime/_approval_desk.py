"""The gateway's side of human approval: asking for it, and checking it before executing.

:meth:`ApprovalDesk.request` stages a :class:`~runtime._approvals.RequestApproval`
to the agent's approval queue (``AgentConfig.approvals``) through the
handler's transaction, so the request leaves only if the handler's changes
commit, and answers ``pending``.  Its id is ``<agent id>:<key>``: a message
handled again after a crash asks again under the same id, which the queue
stores once.

:meth:`ApprovalDesk.cleared` asks the queue for the request (the queue is the
authority; what a decision message says is not trusted) and checks it with
:func:`governance.check`: None when the action may execute now, otherwise the
outcome to answer instead (pending, denied, expired, void, prohibited).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from governance import Action, ApprovalRequest, GovernanceError, Outcome, RiskPolicy, check, new_request
from protocols import GarrisonError, make_envelope

from ._agent import current_stage
from ._approvals import GetApproval, RequestApproval

__all__ = ["ApprovalDesk"]


class ApprovalDesk:
    """Requests approvals from, and checks them with, one agent's approval queue (see module docstring)."""

    def __init__(self, *, agent_id: str, queue: str | None, policy: RiskPolicy, config_version: str,
                 lookup: Callable[[str], Any] | None, clock: Callable[[], float] = time.time) -> None:
        self.agent_id = agent_id
        self.queue = queue
        self._policy = policy
        self._config_version = config_version
        self._lookup = lookup
        self._clock = clock

    def request(self, action: Action, key: str, reason: str, context: str) -> Outcome:
        stage = current_stage.get()
        if self.queue is None or stage is None:
            why = "no approval queue is configured (AgentConfig.approvals)" if self.queue is None else \
                "approval requests are only sent from a message handler"
            return Outcome.refusal(key, f"{reason}; {why}", escalation="human")
        request_id = f"{self.agent_id}:{key}"
        req = new_request(action, request_id=request_id, agent_id=self.agent_id, policy=self._policy,
                          config_version=self._config_version, now=self._clock(), context=context or reason)
        stage(self.queue, make_envelope(RequestApproval(request=req.model_dump(mode="json")), self.queue,
                                        sender=self.agent_id))
        return Outcome.awaiting(key, request_id, f"{reason}: awaiting approval {request_id} in {self.queue}")

    async def cleared(self, action: Action, approval_id: str, key: str) -> Outcome | None:
        if self.queue is None or self._lookup is None:
            return Outcome.refusal(key, "no approval queue to check the approval with", escalation="human")
        try:
            raw = await self._lookup(self.queue).ask_async(GetApproval(approval_id=approval_id), timeout=30)
            req = ApprovalRequest.model_validate(raw)
        except GovernanceError as exc:
            return Outcome.denial(key, f"approval {approval_id}: {exc}", approval_id=approval_id)
        except GarrisonError as exc:  # the queue is down or slow: try again later
            return Outcome.failure(key, f"approval queue {self.queue} did not answer: {type(exc).__name__}: {exc}",
                                   retryable=True, escalation="operator")
        if req.agent_id != self.agent_id:
            return Outcome.denial(key, f"approval {approval_id} was asked by {req.agent_id}, not this agent",
                                  approval_id=approval_id)
        verdict = check(req, action, self._policy, self._config_version, self._clock())
        return verdict.outcome(key)
