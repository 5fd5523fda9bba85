"""Governed actions: what an agent does in the world, behind one gateway.

Depends on :mod:`protocols` and :mod:`runtime` (``protocols <- runtime <-
governance``); the runtime knows nothing of it.
"""

# -- actions, outcomes, risk policy, approvals (branch gov-a) ----------------------------------------
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
from ._outcome import Outcome, OutcomeCode
from ._risk import Decision, DecisionCode, RiskPolicy, decide, effective_risk, is_granted, parse_grants

# -- end gov-a ----------------------------------------------------------------------------------------
from .exceptions import ActionDeclarationError, ApprovalError, BudgetError, GovernanceError, PolicyError

__all__ = [
    "Action",
    "ActionDeclaration",
    "ActionDeclarationError",
    "Approval",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalState",
    "BudgetError",
    "Clearance",
    "Decision",
    "DecisionCode",
    "Denial",
    "GovernanceError",
    "Outcome",
    "OutcomeCode",
    "PolicyError",
    "Risk",
    "RiskPolicy",
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
