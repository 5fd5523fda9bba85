"""Governed actions: what an agent does in the world, behind one gateway.

Depends on :mod:`protocols` and :mod:`runtime` (``protocols <- runtime <-
governance``); the runtime knows nothing of it.
"""

from ._action import Action, ActionDeclaration, Risk, argument_digest
from ._approval import (
    Approval,
    ApprovalRequest,
    ApprovalState,
    Clearance,
    Denial,
    Verdict,
    approve,
    binding_hash,
    check,
    deny,
    expire,
    new_request,
)
from ._breaker import Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Transition, TransitionReason
from ._budget import Budget, BudgetPolicy, BudgetUsage, Refusal, RefusalReason, Reservation, Settlement
from ._drift import DriftMonitor, DriftPolicy, Scorer
from ._outcome import Outcome, OutcomeCode
from ._risk import Decision, DecisionCode, RiskPolicy, decide, effective_risk, is_granted, parse_grants
from .exceptions import ActionDeclarationError, ApprovalError, BudgetError, GovernanceError, PolicyError

__all__ = [
    "Action",
    "ActionDeclaration",
    "ActionDeclarationError",
    "Admission",
    "Approval",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalState",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Budget",
    "BudgetError",
    "BudgetPolicy",
    "BudgetUsage",
    "CallResult",
    "Clearance",
    "Decision",
    "DecisionCode",
    "Denial",
    "DriftMonitor",
    "DriftPolicy",
    "GovernanceError",
    "Outcome",
    "OutcomeCode",
    "PolicyError",
    "Refusal",
    "RefusalReason",
    "Reservation",
    "Risk",
    "RiskPolicy",
    "Scorer",
    "Settlement",
    "Transition",
    "TransitionReason",
    "Verdict",
    "approve",
    "argument_digest",
    "binding_hash",
    "check",
    "decide",
    "deny",
    "effective_risk",
    "expire",
    "is_granted",
    "new_request",
    "parse_grants",
]
