"""Structured outcomes: what every governed action answers, never an ambiguous exception.

An :class:`Outcome` is a frozen record with a code from :class:`OutcomeCode`.
Each code has one constructor, and the constructor carries the defaults a
caller would otherwise have to remember:

=================  =============================  =========  ==========
code               constructor                    retryable  escalation
=================  =============================  =========  ==========
ok                 ``Outcome.success``            False      None
refused            ``Outcome.refusal``            False      None
pending            ``Outcome.awaiting``           False      "human"
denied             ``Outcome.denial``             False      None
expired            ``Outcome.expiry``             False      None
breaker_open       ``Outcome.breaker_tripped``    True       None
budget_exceeded    ``Outcome.over_budget``        True       "operator"
failed             ``Outcome.failure``            (given)    None
unknown            ``Outcome.in_doubt``           False      "human"
=================  =============================  =========  ==========

No constructor is named like a code (``refused``, ``pending``, ``unknown``)
on purpose: ``if outcome.refused:`` would read a bound method, always true.
Ask ``outcome.ok`` or compare ``outcome.code``.

Invariants (checked when an outcome is built or loaded):

- ``retryable`` means: the *same* call may succeed later without anyone
  changing anything (a breaker closes, a budget window refills).  Refusals,
  denials and expiries are never retryable: a retry needs a new decision.
- ``escalation`` names who or what must look at it (``"human"``,
  ``"operator"``), or is None when the calling agent can handle it alone.
- A pending outcome names its ``approval_id``: the decision arrives later as a
  message about that request.
- ``result`` is msgpack-friendly (None, bool, int, float, str, bytes, lists
  and dicts of those) so an outcome can be written to the ledger and sent as
  it is.  ``partial=True`` says the result is incomplete.
- ``cost``, when known, is not negative.
- ``Outcome.model_validate(o.model_dump(mode="json")) == o`` for every outcome
  whose result has no tuples or bytes (JSON has neither).
"""

from __future__ import annotations

import enum
import math
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

__all__ = ["Outcome", "OutcomeCode"]


class OutcomeCode(str, enum.Enum):
    """What happened to one governed action."""

    OK = "ok"                            # it ran and succeeded (``partial`` may say the result is incomplete)
    REFUSED = "refused"                  # never ran: capability not granted, or prohibited
    PENDING = "pending"                  # waits for a human approval; the decision arrives later as a message
    DENIED = "denied"                    # a human denied it, or its approval was void (arguments/policy/config changed)
    EXPIRED = "expired"                  # its approval's time to live passed before it was approved or executed
    BREAKER_OPEN = "breaker_open"        # never ran: a circuit breaker on its tool or agent is open
    BUDGET_EXCEEDED = "budget_exceeded"  # never ran: its estimated cost exceeds what the budget has left
    FAILED = "failed"                    # it ran and failed (a business error is OK with a result, not this)
    UNKNOWN = "unknown"                  # it may or may not have run (crash between intent and outcome)


def _msgpack_friendly(value: Any) -> Any:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"result must be msgpack-friendly: {exc}") from exc
    return value


def _finite_cost(value: float | None) -> float | None:
    if value is not None and (value < 0 or not math.isfinite(value)):
        raise ValueError(f"cost must be a finite number >= 0, got {value!r}")
    return value


class Outcome(BaseModel):
    """The structured answer of one governed action (see the module docstring for the codes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: OutcomeCode
    reason: str = ""
    retryable: bool = False
    escalation: str | None = None
    correlation_id: str
    result: Any = None
    partial: bool = False
    cost: float | None = None
    approval_id: str | None = None

    @field_validator("result")
    @classmethod
    def _result_is_msgpack_friendly(cls, value: Any) -> Any:
        return _msgpack_friendly(value)

    @field_validator("cost")
    @classmethod
    def _cost_is_not_negative(cls, value: float | None) -> float | None:
        return _finite_cost(value)

    @field_validator("escalation")
    @classmethod
    def _escalation_names_someone(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("escalation names who must look at it, or is None")
        return value

    @model_validator(mode="after")
    def _codes_keep_their_promises(self) -> Outcome:
        if self.code is OutcomeCode.PENDING and not self.approval_id:
            raise ValueError("a pending outcome names its approval_id")
        if self.retryable and self.code in (OutcomeCode.REFUSED, OutcomeCode.DENIED, OutcomeCode.EXPIRED):
            raise ValueError(f"a {self.code.value} outcome is never retryable: a retry needs a new decision")
        return self

    @property
    def ok(self) -> bool:
        """True when the action ran and succeeded (its result may still be ``partial``)."""
        return self.code is OutcomeCode.OK

    # -- one constructor per code ---------------------------------------------------------------------

    @classmethod
    def success(cls, correlation_id: str, result: Any = None, *, partial: bool = False,
                cost: float | None = None, reason: str = "") -> Outcome:
        """``ok``: it ran; ``partial=True`` when ``result`` is incomplete."""
        return cls(code=OutcomeCode.OK, correlation_id=correlation_id, result=result, partial=partial,
                   cost=cost, reason=reason)

    @classmethod
    def refusal(cls, correlation_id: str, reason: str, *, escalation: str | None = None) -> Outcome:
        """``refused``: never ran (capability not granted, prohibited); not retryable."""
        return cls(code=OutcomeCode.REFUSED, correlation_id=correlation_id, reason=reason, escalation=escalation)

    @classmethod
    def awaiting(cls, correlation_id: str, approval_id: str, reason: str = "awaiting human approval") -> Outcome:
        """``pending``: a human must approve request ``approval_id``; the decision arrives as a message."""
        return cls(code=OutcomeCode.PENDING, correlation_id=correlation_id, approval_id=approval_id,
                   reason=reason, escalation="human")

    @classmethod
    def denial(cls, correlation_id: str, reason: str, *, approval_id: str | None = None) -> Outcome:
        """``denied``: a human denied it, or its approval is void; not retryable."""
        return cls(code=OutcomeCode.DENIED, correlation_id=correlation_id, reason=reason, approval_id=approval_id)

    @classmethod
    def expiry(cls, correlation_id: str, reason: str = "approval expired", *,
               approval_id: str | None = None) -> Outcome:
        """``expired``: the approval's time to live passed; not retryable (ask again: a new request)."""
        return cls(code=OutcomeCode.EXPIRED, correlation_id=correlation_id, reason=reason, approval_id=approval_id)

    @classmethod
    def breaker_tripped(cls, correlation_id: str, reason: str, *, retryable: bool = True) -> Outcome:
        """``breaker_open``: never ran; retryable once the breaker closes."""
        return cls(code=OutcomeCode.BREAKER_OPEN, correlation_id=correlation_id, reason=reason, retryable=retryable)

    @classmethod
    def over_budget(cls, correlation_id: str, reason: str, *, retryable: bool = True,
                    escalation: str | None = "operator") -> Outcome:
        """``budget_exceeded``: never ran; retryable when the budget refills, an operator is told."""
        return cls(code=OutcomeCode.BUDGET_EXCEEDED, correlation_id=correlation_id, reason=reason,
                   retryable=retryable, escalation=escalation)

    @classmethod
    def failure(cls, correlation_id: str, reason: str, *, retryable: bool, result: Any = None,
                partial: bool = False, cost: float | None = None, escalation: str | None = None) -> Outcome:
        """``failed``: it ran and failed; the caller says whether this error is worth a retry."""
        return cls(code=OutcomeCode.FAILED, correlation_id=correlation_id, reason=reason, retryable=retryable,
                   result=result, partial=partial, cost=cost, escalation=escalation)

    @classmethod
    def in_doubt(cls, correlation_id: str, reason: str, *, escalation: str = "human") -> Outcome:
        """``unknown``: it may have run; never repeated blindly, a human decides."""
        return cls(code=OutcomeCode.UNKNOWN, correlation_id=correlation_id, reason=reason, escalation=escalation)
