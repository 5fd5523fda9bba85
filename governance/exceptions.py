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
        ├── BudgetError             a reservation is unknown or settled twice
        └── ToolError               the system a shipped tool calls failed this call (see ``retryable``)
            ├── ToolUnavailable     it could not be reached, timed out, was overloaded or rate limited
            └── ToolRejected        it answered and refused this call (bad request, auth, unknown tool)
                ├── ToolErrorResult the tool ran and answered an error result (an MCP ``isError``)
                └── ModelNotPriced  a chat model is not in the tool's price table: nothing was sent

``ToolUnavailable`` and ``ToolRejected`` differ as "try again later" and "this
call, as it is, will not succeed": the first is retryable (unless the call may
have taken effect and its action is not idempotent), the second never is.
"""

from __future__ import annotations

from typing import Any

from protocols.exceptions import GarrisonError

__all__ = [
    "ActionDeclarationError",
    "ApprovalError",
    "BudgetError",
    "GovernanceError",
    "ModelNotPriced",
    "PolicyError",
    "ToolError",
    "ToolErrorResult",
    "ToolRejected",
    "ToolUnavailable",
]


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


class ToolError(GovernanceError):
    """A shipped tool's external system failed this call; the gateway makes it a ``failed`` outcome."""

    #: Whether the same call may succeed later without anyone changing anything (the class's default).
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, **details: Any) -> None:
        retryable = type(self).retryable if retryable is None else retryable
        super().__init__(message, retryable=retryable, **details)  # details travel across pickling
        self.retryable = retryable


class ToolUnavailable(ToolError):
    """The system could not be reached, timed out, was overloaded or rate limited: try again later."""

    retryable = True


class ToolRejected(ToolError):
    """The system answered and refused this call (bad request, auth, unknown tool, an error result)."""

    retryable = False


class ToolErrorResult(ToolRejected):
    """The tool ran and answered an error result (an MCP ``isError``): its text says what went wrong."""


class ModelNotPriced(ToolRejected):
    """The requested chat model is not in the tool's price table: nothing was sent, nothing is charged."""
