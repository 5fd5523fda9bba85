"""Governed actions: what an agent does in the world, behind one gateway.

Depends on :mod:`protocols` and :mod:`runtime` (``protocols <- runtime <-
governance``); the runtime knows nothing of it.
"""

# -- breakers, drift and budgets (branch gov-b) --
from ._breaker import Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Transition, TransitionReason
from ._budget import Budget, BudgetPolicy, BudgetUsage, Refusal, RefusalReason, Reservation, Settlement
from ._drift import DriftMonitor, DriftPolicy, Scorer

# -- end of gov-b's block --
from .exceptions import ActionDeclarationError, ApprovalError, BudgetError, GovernanceError, PolicyError

__all__ = [
    "ActionDeclarationError",
    "Admission",
    "ApprovalError",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Budget",
    "BudgetError",
    "BudgetPolicy",
    "BudgetUsage",
    "CallResult",
    "DriftMonitor",
    "DriftPolicy",
    "GovernanceError",
    "PolicyError",
    "Refusal",
    "RefusalReason",
    "Reservation",
    "Scorer",
    "Settlement",
    "Transition",
    "TransitionReason",
]
