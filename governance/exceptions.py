"""Exceptions raised by the governance layer.

What an action *does* (refused, pending, denied, breaker open, over budget,
failed...) is never an exception: it is an :class:`~governance.Outcome` with a
code.  These are for what is wrong with the program or the data an operator
gives: a policy that does not validate, an action class declared wrongly, an
approval that names no pending request.  They hang under the one root every
Garrison error has (:class:`protocols.GarrisonError`)::

    GarrisonError
    └── GovernanceError             (this module)
        ├── PolicyError             a risk, breaker or budget policy is out of range or inconsistent
        ├── ActionDeclarationError  an action class is declared wrongly (risk, cost, errors)
        ├── ApprovalError           an approval or denial names no pending request, or is not allowed
        └── BudgetError             a reservation is unknown or settled twice
"""

from __future__ import annotations

from protocols.exceptions import GarrisonError

__all__ = ["ActionDeclarationError", "ApprovalError", "BudgetError", "GovernanceError", "PolicyError"]


class GovernanceError(GarrisonError):
    """Root of the governance layer's errors."""


class PolicyError(GovernanceError):
    """A risk, breaker or budget policy is out of range or inconsistent."""


class ActionDeclarationError(GovernanceError):
    """An action class is declared wrongly."""


class ApprovalError(GovernanceError):
    """An approval or denial names no pending request, or is not allowed."""


class BudgetError(GovernanceError):
    """A reservation is unknown or settled twice."""
