"""Cost budgets: a call is checked against its estimate *before* it runs, and charged its actual cost after.

A :class:`Budget` is pure accounting under a frozen :class:`BudgetPolicy`.
The caller serialises every call to it (a per-agent budget lives in the
agent's state; a fleet budget lives in one dedicated agent whose
single-threaded handler takes the reservations of several agents in turn),
so each :meth:`~Budget.reserve` is atomic: check and reservation are one step.
Every method takes ``now`` (seconds on one clock).

The protocol of one call, under a key unique to it (its idempotency key)::

    r = budget.reserve(key, estimate, now)     # Reservation, or Refusal: the call is not made
    ... the call ...
    budget.settle(key, actual, now)            # the call was made: charge its actual cost
    budget.release(key, now)                   # or: the call was not made after all

Semantics:

* **Admission.**  ``reserve`` refuses when ``spent + reserved + estimate >
  limit`` (``spent``: settled this period; ``reserved``: estimates of the
  calls in flight).  So a call whose estimate exceeds what is left is refused
  before anything is spent, and while ``spent >= limit`` nothing is admitted.
  A :class:`Refusal` says whether the estimate could ever fit
  (``EXCEEDS_LIMIT``: it is over the whole limit) or not now (``EXHAUSTED``,
  with ``retry_at``, the end of the period, when there is one).
* **Invariant** (checked by a property test over any interleaving): within a
  period, ``spent + reserved <= limit + overrun``, where ``overrun`` is the
  sum, over the calls settled in this period, of ``max(0, actual -
  estimate)`` (an expired reservation that is settled late counts its whole
  actual: nothing was reserved for it any more).  Hence **the overspend
  bound**: ``spent - limit <= overrun``.  If no actual exceeds its estimate,
  the limit is never exceeded, however many reservations interleave.  An
  overrun is never clipped (the money was spent; the books say so); it only
  makes the next reservations wait.  The bound holds for the limit under
  which each reservation was made: restoring under a lower limit cancels no
  reservation.
* **Periods.**  With ``period`` set, periods are ``[anchor + k * period,
  anchor + (k + 1) * period)`` with ``anchor`` the creation time; at the
  first call in a new period ``spent`` and ``overrun`` go to zero.
  Reservations in flight are carried over (still counted in ``reserved``) and
  their actual is charged to the period in which they are settled.  A clock
  that goes back never returns to a past period.  ``period=None``: one
  lifetime budget.
* **Keys.**  ``reserve`` again with a key in flight and the same estimate
  returns the same reservation (a retried request); anything else about a
  key already used raises :class:`~governance.BudgetError`.  ``settle`` of a
  key already settled with the same actual is a no-op (``duplicate``), with a
  different actual a BudgetError; ``release`` of a released or expired key is
  a no-op.  ``settle`` of a released key, ``release`` of a settled key and
  either on a key never reserved are BudgetErrors.  Closed keys are
  remembered for ``remember`` seconds, then forgotten.
* **Crashed reservers.**  ``expire_reservations(now, older_than)`` releases
  the reservations made before ``now - older_than``; a late ``settle`` of one
  is still charged (see the invariant).
* **Exactness.**  Amounts are ints or floats and add as Python adds them:
  use integer units (micro-dollars, tokens) for exact accounting; with floats
  the bound holds up to rounding.

Snapshots are msgpack-friendly dicts (the policy is not in them); times in
them are readings of the caller's clock, so one kept across restarts needs a
clock that survives them (``time.time()``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ._policy import Policy
from .exceptions import BudgetError, GovernanceError

__all__ = ["Budget", "BudgetPolicy", "BudgetUsage", "Refusal", "RefusalReason", "Reservation", "Settlement"]

SNAPSHOT_VERSION = 1
Amount = int | float


class BudgetPolicy(Policy):
    """A budget's limit and period.  Frozen; raises :class:`PolicyError` when out of range."""


    #: Cost allowed per period (in the unit the estimates and actuals use).
    limit: Amount = Field(gt=0)
    #: Seconds per period (None: one budget for the budget's whole life).
    period: float | None = Field(None, gt=0)
    #: Seconds a settled, released or expired key is remembered (for idempotent retries).
    remember: float = Field(86400.0, gt=0)



class RefusalReason(enum.Enum):
    """Why a reservation was refused."""

    #: The estimate is over the whole limit: it will never fit.
    EXCEEDS_LIMIT = "exceeds_limit"
    #: Not enough is left now (spent and in flight); it may fit later.
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted reservation: the call may go ahead."""

    key: str
    estimate: Amount
    at: float
    granted = True


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused reservation: the call must not be made."""

    key: str
    estimate: Amount
    reason: RefusalReason
    #: What was left (limit - spent - reserved, at least 0) when refused.
    remaining: Amount
    limit: Amount
    #: EXHAUSTED in a periodic budget: when the next period starts (None otherwise).
    retry_at: float | None
    granted = False


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settled call: what it was charged."""

    key: str
    estimate: Amount
    actual: Amount
    #: ``max(0, actual - estimate)`` (the whole actual for an expired reservation).
    overrun: Amount
    #: True: this key was already settled with this actual; nothing was charged again.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """A budget's figures at one moment."""

    limit: Amount
    spent: Amount
    reserved: Amount
    #: ``max(0, limit - spent - reserved)``.
    remaining: Amount
    #: Sum of the overruns settled this period: ``spent - limit`` never exceeds it.
    overrun: Amount
    in_flight: int
    period_start: float | None
    period_end: float | None


class _Closed(enum.Enum):
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class Budget:
    """One budget's accounting (see the module docstring)."""

    def __init__(self, policy: BudgetPolicy, now: float, snapshot: dict[str, Any] | None = None) -> None:
        """A fresh budget whose first period starts at ``now``, or the one ``snapshot`` recorded."""
        self.policy = policy
        self._anchor = now
        self._period_index = 0
        self._spent: Amount = 0
        self._overrun: Amount = 0
        self._reservations: dict[str, Reservation] = {}  # in flight, in order of reservation
        # Keys no longer in flight -> (how, amount: the actual if settled else the estimate, when).
        self._closed: dict[str, tuple[_Closed, Amount, float]] = {}
        if snapshot is not None:
            self._load(snapshot)

    # -- the protocol of a call -------------------------------------------------------

    def reserve(self, key: str, estimate: Amount, now: float) -> Reservation | Refusal:
        """Reserve ``estimate`` for the call ``key``, or refuse it (then the call must not be made)."""
        _check_amount("estimate", estimate)
        self._roll(now)
        held = self._reservations.get(key)
        if held is not None:
            if held.estimate != estimate:
                raise BudgetError(f"reservation {key!r} is in flight with estimate {held.estimate}, not {estimate}",
                                  key=key)
            return held
        if key in self._closed:
            raise BudgetError(f"key {key!r} was already used ({self._closed[key][0].value}); a call needs a new key",
                              key=key)
        limit = self.policy.limit
        reserved = self.reserved()
        if self._spent + reserved + estimate > limit:
            never = estimate > limit
            return Refusal(key, estimate, RefusalReason.EXCEEDS_LIMIT if never else RefusalReason.EXHAUSTED,
                           max(0, limit - self._spent - reserved), limit,
                           None if never else self._period_end())
        reservation = Reservation(key, estimate, now)
        self._reservations[key] = reservation
        return reservation

    def settle(self, key: str, actual: Amount, now: float) -> Settlement:
        """The call ``key`` was made and cost ``actual``: release its reservation and charge it."""
        _check_amount("actual", actual)
        self._roll(now)
        reservation = self._reservations.pop(key, None)
        if reservation is not None:
            overrun = max(0, actual - reservation.estimate)
            estimate = reservation.estimate
        else:
            how, amount, _ = self._closed_entry(key, "settle")
            if how is _Closed.SETTLED:
                if amount != actual:
                    raise BudgetError(f"call {key!r} was already settled at {amount}, not {actual}", key=key)
                return Settlement(key, amount, actual, 0, duplicate=True)
            if how is _Closed.RELEASED:
                raise BudgetError(f"call {key!r} was released as not made; it cannot be settled", key=key)
            overrun, estimate = actual, amount  # expired: nothing is reserved for it any more
        self._spent += actual
        self._overrun += overrun
        self._close(key, _Closed.SETTLED, actual, now)
        return Settlement(key, estimate, actual, overrun)

    def release(self, key: str, now: float) -> None:
        """The call ``key`` was not made: free its reservation."""
        self._roll(now)
        reservation = self._reservations.pop(key, None)
        if reservation is not None:
            self._close(key, _Closed.RELEASED, reservation.estimate, now)
            return
        how, _, _ = self._closed_entry(key, "release")
        if how is _Closed.SETTLED:
            raise BudgetError(f"call {key!r} was settled as made; it cannot be released", key=key)

    def expire_reservations(self, now: float, older_than: float) -> list[str]:
        """Release the reservations made before ``now - older_than`` (their reservers crashed); their keys."""
        self._roll(now)
        cutoff = now - older_than
        stale = [r for r in self._reservations.values() if r.at < cutoff]
        for r in stale:
            del self._reservations[r.key]
            self._close(r.key, _Closed.EXPIRED, r.estimate, now)
        return [r.key for r in stale]

    # -- reading ---------------------------------------------------------------------------

    def reserved(self) -> Amount:
        """The estimates of the calls in flight."""
        values = [r.estimate for r in self._reservations.values()]
        return sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)

    def spent(self, now: float) -> Amount:
        """Charged in the period of ``now``."""
        self._roll(now)
        return self._spent

    def remaining(self, now: float) -> Amount:
        """What a reservation may still take at ``now``: ``max(0, limit - spent - reserved)``."""
        self._roll(now)
        return max(0, self.policy.limit - self._spent - self.reserved())

    def usage(self, now: float) -> BudgetUsage:
        """Every figure at ``now``."""
        self._roll(now)
        reserved = self.reserved()
        period = self.policy.period
        start = None if period is None else self._anchor + self._period_index * period
        return BudgetUsage(self.policy.limit, self._spent, reserved,
                           max(0, self.policy.limit - self._spent - reserved), self._overrun,
                           len(self._reservations), start, self._period_end())

    def in_flight(self) -> list[Reservation]:
        """The reservations not yet settled nor released, oldest first."""
        return list(self._reservations.values())

    # -- persistence -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The budget's state as a msgpack-friendly dict."""
        return {
            "v": SNAPSHOT_VERSION,
            "anchor": self._anchor,
            "period_index": self._period_index,
            "spent": self._spent,
            "overrun": self._overrun,
            "reservations": [[r.key, r.estimate, r.at] for r in self._reservations.values()],
            "closed": [[key, how.value, amount, at] for key, (how, amount, at) in self._closed.items()],
        }

    @classmethod
    def restore(cls, policy: BudgetPolicy, snapshot: dict[str, Any]) -> Budget:
        """The budget ``snapshot`` recorded, under ``policy``.  Raises GovernanceError if unreadable."""
        return cls(policy, 0.0, snapshot)

    # -- internals -------------------------------------------------------------------------

    def _load(self, snapshot: dict[str, Any]) -> None:
        try:
            if snapshot["v"] != SNAPSHOT_VERSION:
                raise ValueError(f"version {snapshot['v']!r}, expected {SNAPSHOT_VERSION}")
            anchor, index = float(snapshot["anchor"]), int(snapshot["period_index"])
            spent, overrun = snapshot["spent"], snapshot["overrun"]
            for name, value in (("spent", spent), ("overrun", overrun)):
                _check_amount(name, value)
            reservations = {str(k): Reservation(str(k), e, float(at)) for k, e, at in snapshot["reservations"]}
            for r in reservations.values():
                _check_amount("estimate", r.estimate)
            closed = {str(k): (_Closed(how), amount, float(at)) for k, how, amount, at in snapshot["closed"]}
        except (KeyError, TypeError, ValueError, BudgetError) as exc:
            raise GovernanceError(f"unreadable budget snapshot: {exc!r}", snapshot=repr(snapshot)[:500]) from exc
        self._anchor, self._period_index, self._spent, self._overrun = anchor, index, spent, overrun
        self._reservations, self._closed = reservations, closed

    def _roll(self, now: float) -> None:
        """Move to the period of ``now`` (never back); forget closed keys past ``remember``."""
        period = self.policy.period
        if period is not None:
            index = math.floor((now - self._anchor) / period)
            if index > self._period_index:
                # Invariant: reservations in flight are carried over; what they cost is charged when settled.
                self._period_index, self._spent, self._overrun = index, 0, 0
        if self._closed:
            oldest = now - self.policy.remember
            first = next(iter(self._closed.values()))
            if first[2] < oldest:  # closed in time order: most calls prune nothing
                self._closed = {k: v for k, v in self._closed.items() if v[2] >= oldest}

    def _period_end(self) -> float | None:
        period = self.policy.period
        return None if period is None else self._anchor + (self._period_index + 1) * period

    def _closed_entry(self, key: str, what: str) -> tuple[_Closed, Amount, float]:
        entry = self._closed.get(key)
        if entry is None:
            raise BudgetError(f"cannot {what} {key!r}: no such reservation (never made, or forgotten after "
                              f"{self.policy.remember:g} s)", key=key)
        return entry

    def _close(self, key: str, how: _Closed, amount: Amount, now: float) -> None:
        self._closed.pop(key, None)  # re-inserted at the end: the dict stays in time order
        self._closed[key] = (how, amount, now)


def _check_amount(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise BudgetError(f"{name} must be a finite number >= 0, not {value!r}", **{name: repr(value)})
