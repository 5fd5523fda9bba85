"""Governed actions: what an agent does in the world, behind one gateway.

Depends on :mod:`protocols` and :mod:`runtime` (``protocols <- runtime <-
governance``); the runtime knows nothing of it.
"""

# -- breakers, drift and budgets (branch gov-b) --
from ._breaker import Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Transition, TransitionReason
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
    "BudgetError",
    "CallResult",
    "DriftMonitor",
    "DriftPolicy",
    "GovernanceError",
    "PolicyError",
    "Scorer",
    "Transition",
    "TransitionReason",
]
