"""Governed actions: what an agent does in the world, behind one gateway.

Depends on :mod:`protocols` and :mod:`runtime` (``protocols <- runtime <-
governance``); the runtime knows nothing of it.
"""

from .exceptions import ActionDeclarationError, ApprovalError, BudgetError, GovernanceError, PolicyError

__all__ = ["ActionDeclarationError", "ApprovalError", "BudgetError", "GovernanceError", "PolicyError"]
