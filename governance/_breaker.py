"""Circuit breakers: stop calling a tool, a model or an agent that keeps failing.

One :class:`Breaker` guards one thing (a tool, a model, an agent); its
:class:`BreakerPolicy` is frozen data.  The caller asks :meth:`Breaker.allow`
before each call and tells :meth:`Breaker.record` how it went.  Pure: the
caller passes ``now`` (seconds on one clock) to every method and serialises
the calls (the breaker lives in one agent's single-threaded handler).

States (:class:`BreakerState`)::

            trip (consecutive failures, failure rate, slow rate)
    CLOSED ------------------------------------------------> OPEN
      ^                                                     |  ^
      | every probe succeeded        open_for has passed    |  | a probe failed, was slow,
      |                              (on the next allow)    v  | or was lost
      +------------------------------------------------ HALF_OPEN

Semantics, each an invariant the tests check:

* **Outcomes.**  A call is a ``SUCCESS``, a ``FAILURE`` or a declared
  ``BUSINESS_ERROR`` (:class:`CallResult`).  A business error (the refund was
  refused because the order is closed) says nothing about the tool's health:
  it is not a call for the breaker at all.  It does not enter the window,
  does not increment nor reset the consecutive-failure count, and in
  HALF_OPEN it frees its probe slot without counting as a success.
* **Slow calls.**  With ``slow_call`` set, a counted call that took strictly
  longer than ``slow_call`` seconds is *slow* (a failure may be slow too).
  Slowness has its own rate (``slow_rate``); a slow success still resets the
  consecutive-failure count.  In HALF_OPEN a slow probe counts as a failed one.
* **Trips from CLOSED** are checked after each counted call, in this order:
  ``consecutive_failures`` failures in a row; then, once the window holds at
  least ``min_calls`` calls, a failure fraction ``>= failure_rate``; then a
  slow fraction ``>= slow_rate``.  (``>=``, so a rate of 1.0 means "every
  call in the window".)  Each condition is off when its field is None.
* **The window** is the last ``window_calls`` counted calls, and, when
  ``window_seconds`` is set, only those recorded in the last ``window_seconds``
  (so it is count-based, time-based, or both).  It is emptied on every
  transition: a closed breaker starts afresh.
* **OPEN** refuses every call until ``open_until``; the first :meth:`allow`
  at or after it moves to HALF_OPEN.  The open period is ``open_for`` after a
  trip from CLOSED and grows by ``open_for_factor`` on each reopen from
  HALF_OPEN, capped at ``open_for_max``; closing resets it.  An operator's
  :meth:`Breaker.trip` holds the breaker OPEN until :meth:`Breaker.reset`.
* **HALF_OPEN** admits at most ``half_open_probes`` probes per episode: an
  admitted probe not yet recorded holds its slot.  When all of them succeed
  the breaker closes; one failure (or slow probe) reopens it.  A probe not
  recorded within ``probe_timeout`` seconds (its caller died) is lost and
  reopens the breaker.
* **Generations.**  Every transition bumps ``generation``; an
  :class:`Admission` carries the generation it was granted in, and a
  :meth:`Breaker.record` that passes it back is ignored if the breaker has
  moved on since (a straggler admitted while CLOSED must not be taken for a
  probe, nor a probe from a past episode for a fresh one).  A record without
  a generation counts in the current state; in OPEN, records are ignored.
* **Transitions** are returned (by :meth:`~Breaker.record`, in
  :attr:`Admission.transition`, by :meth:`~Breaker.trip` and
  :meth:`~Breaker.reset`) so the caller can notify operators or pull a kill
  switch; the breaker does nothing itself.

Snapshots (:meth:`Breaker.snapshot`, :meth:`Breaker.restore`) are
msgpack-friendly dicts.  Times in them are readings of the caller's clock: a
snapshot kept across process restarts needs a clock that survives them
(``time.time()``), not ``time.monotonic()``, which restarts with the host.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from ._policy import Policy
from .exceptions import GovernanceError

__all__ = [
    "Admission",
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "CallResult",
    "Transition",
    "TransitionReason",
]

SNAPSHOT_VERSION = 1


class BreakerState(enum.Enum):
    """Where a breaker (or a drift monitor) stands."""

    #: Calls pass; their outcomes are counted.
    CLOSED = "closed"
    #: Calls are refused, until ``open_until`` (or until an operator resets a held breaker).
    OPEN = "open"
    #: A few trial calls (probes) pass; the others are refused.
    HALF_OPEN = "half_open"


class CallResult(enum.Enum):
    """How a guarded call ended, as the caller classifies it."""

    SUCCESS = "success"
    FAILURE = "failure"
    #: An error the action declares as a business outcome: not counted at all.
    BUSINESS_ERROR = "business_error"


class TransitionReason(enum.Enum):
    """Why a breaker or drift monitor changed state."""

    CONSECUTIVE_FAILURES = "consecutive_failures"
    FAILURE_RATE = "failure_rate"
    SLOW_RATE = "slow_rate"
    #: OPEN -> HALF_OPEN: the open period has passed.
    OPEN_ELAPSED = "open_elapsed"
    PROBE_FAILED = "probe_failed"
    PROBE_SLOW = "probe_slow"
    #: A probe was not recorded within ``probe_timeout``.
    PROBE_LOST = "probe_lost"
    #: HALF_OPEN -> CLOSED: every probe succeeded.
    PROBES_SUCCEEDED = "probes_succeeded"
    #: A drift monitor's windowed score reached its threshold.
    DRIFT = "drift"
    #: An operator (or a kill switch) opened it, held until reset.
    OPERATOR_TRIP = "operator_trip"
    #: An operator closed it.
    OPERATOR_RESET = "operator_reset"


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for the caller to act on (notify, kill switch, status)."""

    from_state: BreakerState
    to_state: BreakerState
    reason: TransitionReason
    at: float
    #: Human text: the figures behind the reason.
    detail: str = ""
    #: The operator, for OPERATOR_TRIP and OPERATOR_RESET.
    who: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Msgpack-friendly form (for a notification or a status report)."""
        return {"from": self.from_state.value, "to": self.to_state.value, "reason": self.reason.value,
                "at": self.at, "detail": self.detail, "who": self.who}


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer of :meth:`Breaker.allow`."""

    allowed: bool
    state: BreakerState
    #: Pass back to :meth:`Breaker.record` so a straggler is told apart.
    generation: int
    #: Refused: when the breaker may admit again (None: when a probe completes,
    #: or, for a held breaker, when an operator resets it).
    until: float | None = None
    #: Allowed in HALF_OPEN: this call is a probe.
    probe: bool = False
    #: The transition this ``allow`` caused (OPEN -> HALF_OPEN, or a lost probe reopening).
    transition: Transition | None = None


class BreakerPolicy(Policy):
    """When a breaker trips and how it recovers.  Frozen; defaults are production defaults.

    Raises :class:`PolicyError` (never pydantic's error) when out of range.
    """


    #: Trip after this many counted failures in a row (None: off).
    consecutive_failures: int | None = Field(5, ge=1)
    #: Trip when the failure fraction of the window reaches this (None: off).
    failure_rate: float | None = Field(0.5, gt=0, le=1)
    #: A counted call longer than this many seconds is slow (None: slowness is not watched).
    slow_call: float | None = Field(None, gt=0)
    #: Trip when the slow fraction of the window reaches this (with ``slow_call`` set).
    slow_rate: float = Field(1.0, gt=0, le=1)
    #: The window: at most this many counted calls...
    window_calls: int = Field(20, ge=1)
    #: ...recorded in the last this many seconds (None: no age limit).
    window_seconds: float | None = Field(None, gt=0)
    #: Rates are judged only once the window holds this many calls.
    min_calls: int = Field(10, ge=1)
    #: Seconds OPEN after a trip from CLOSED, before a probe is let through.
    open_for: float = Field(30.0, gt=0)
    #: Each reopen from HALF_OPEN multiplies the open period by this (1: constant).
    open_for_factor: float = Field(1.0, ge=1)
    #: The open period never grows past this.
    open_for_max: float = Field(600.0, gt=0)
    #: Probes HALF_OPEN admits per episode; all must succeed to close.
    half_open_probes: int = Field(1, ge=1)
    #: Seconds after which an admitted probe that was never recorded counts as lost.
    probe_timeout: float = Field(60.0, gt=0)


    @model_validator(mode="after")
    def _check(self) -> BreakerPolicy:
        if self.min_calls > self.window_calls:
            raise ValueError(f"min_calls ({self.min_calls}) must not exceed window_calls ({self.window_calls})")
        if self.open_for_max < self.open_for:
            raise ValueError(f"open_for_max ({self.open_for_max}) must not be below open_for ({self.open_for})")
        if self.consecutive_failures is None and self.failure_rate is None and self.slow_call is None:
            raise ValueError("a breaker needs a trip condition: consecutive_failures, failure_rate or slow_call")
        return self


class CallWindow:
    """The last counted calls (at most ``size``, none older than ``max_age``) with running counts.

    Invariant: ``failures`` and ``slow`` are the counts of the entries held.
    """

    def __init__(self, size: int, max_age: float | None) -> None:
        self._calls: deque[tuple[float, bool, bool]] = deque()  # (at, failed, slow), oldest first
        self._size = size
        self._max_age = max_age
        self.failures = 0
        self.slow = 0

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, at: float, failed: bool, slow: bool) -> None:
        """Count a call at ``at``, dropping what falls out of the window."""
        self._calls.append((at, failed, slow))
        self.failures += failed
        self.slow += slow
        while len(self._calls) > self._size:
            self._drop()
        self.trim(at)

    def trim(self, now: float) -> None:
        """Drop the calls older than ``max_age`` at ``now``."""
        if self._max_age is None:
            return
        oldest = now - self._max_age
        while self._calls and self._calls[0][0] < oldest:
            self._drop()

    def clear(self) -> None:
        self._calls.clear()
        self.failures = self.slow = 0

    def entries(self) -> list[list[Any]]:
        """Msgpack-friendly ``[[at, failed, slow], ...]``, oldest first."""
        return [list(c) for c in self._calls]

    def _drop(self) -> None:
        _, failed, slow = self._calls.popleft()
        self.failures -= failed
        self.slow -= slow


class Breaker:
    """One circuit breaker (see the module docstring for its semantics)."""

    def __init__(self, policy: BreakerPolicy, snapshot: dict[str, Any] | None = None) -> None:
        """A closed breaker, or the one ``snapshot`` recorded (see :meth:`restore`)."""
        self.policy = policy
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window = CallWindow(policy.window_calls, policy.window_seconds)
        self._consecutive = 0  # counted failures in a row, in CLOSED
        self._open_until: float | None = None  # OPEN: when it may half-open (None: held by an operator)
        self._reopens = 0  # reopens from HALF_OPEN since the last close: grows the open period
        self._probes: list[float] = []  # HALF_OPEN: admission times of probes not yet recorded, oldest first
        self._probes_ok = 0  # HALF_OPEN: probes that succeeded this episode
        if snapshot is not None:
            self._load(snapshot)

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as last moved (an OPEN breaker half-opens only on the next :meth:`allow`)."""
        return self._state

    @property
    def consecutive(self) -> int:
        """Failures in a row counted while CLOSED."""
        return self._consecutive

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def open_until(self) -> float | None:
        """OPEN: when the next :meth:`allow` may half-open it (None otherwise, or when held)."""
        return self._open_until if self._state is BreakerState.OPEN else None

    # -- the guarded call ----------------------------------------------------------------

    def allow(self, now: float) -> Admission:
        """May a call start at ``now``?  Admitting a probe reserves its slot until recorded."""
        if self._state is BreakerState.CLOSED:
            return Admission(True, BreakerState.CLOSED, self._generation)
        transition = None
        if self._state is BreakerState.OPEN:
            if self._open_until is None or now < self._open_until:
                return Admission(False, BreakerState.OPEN, self._generation, until=self._open_until)
            transition = self._move(BreakerState.HALF_OPEN, TransitionReason.OPEN_ELAPSED, now,
                                    f"open since before {self._open_until:.3f}")
        lost_before = now - self.policy.probe_timeout
        if self._probes and self._probes[0] <= lost_before:
            lost = sum(1 for t in self._probes if t <= lost_before)
            transition = self._reopen(TransitionReason.PROBE_LOST, now,
                                      f"{lost} probe(s) not recorded within {self.policy.probe_timeout:g} s")
            return Admission(False, BreakerState.OPEN, self._generation, until=self._open_until,
                             transition=transition)
        if len(self._probes) + self._probes_ok < self.policy.half_open_probes:
            self._probes.append(now)
            return Admission(True, BreakerState.HALF_OPEN, self._generation, probe=True, transition=transition)
        return Admission(False, BreakerState.HALF_OPEN, self._generation, transition=transition)

    def record(self, result: CallResult, duration: float, now: float, *,
               generation: int | None = None) -> Transition | None:
        """Count a call that took ``duration`` seconds and ended at ``now``; the transition it caused, if any.

        ``generation`` is the admission's; a record from a past generation is ignored.
        """
        if generation is not None and generation != self._generation:
            return None  # admitted under a state that has since changed
        if self._state is BreakerState.OPEN:
            return None
        slow = self.policy.slow_call is not None and duration > self.policy.slow_call
        if self._state is BreakerState.HALF_OPEN:
            return self._record_probe(result, slow, duration, now)
        if result is CallResult.BUSINESS_ERROR:
            return None
        failed = result is CallResult.FAILURE
        self._window.add(now, failed, slow)
        self._consecutive = self._consecutive + 1 if failed else 0
        return self._check_trip(now)

    # -- operators -----------------------------------------------------------------------

    def trip(self, who: str, now: float, detail: str = "") -> Transition | None:
        """Open the breaker and hold it open until :meth:`reset` (None if it already was held)."""
        if self._state is BreakerState.OPEN and self._open_until is None:
            return None
        transition = self._move(BreakerState.OPEN, TransitionReason.OPERATOR_TRIP, now, detail, who=who)
        self._open_until = None
        return transition

    def reset(self, who: str, now: float, detail: str = "") -> Transition | None:
        """Close the breaker and forget its history (None if it was already closed)."""
        if self._state is BreakerState.CLOSED:
            return None
        self._reopens = 0
        return self._move(BreakerState.CLOSED, TransitionReason.OPERATOR_RESET, now, detail, who=who)

    # -- persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The breaker's state as a msgpack-friendly dict (the policy is not included)."""
        return {
            "v": SNAPSHOT_VERSION,
            "state": self._state.value,
            "generation": self._generation,
            "consecutive": self._consecutive,
            "window": self._window.entries(),
            "open_until": self._open_until,
            "reopens": self._reopens,
            "probes": list(self._probes),
            "probes_ok": self._probes_ok,
        }

    @classmethod
    def restore(cls, policy: BreakerPolicy, snapshot: dict[str, Any]) -> Breaker:
        """The breaker ``snapshot`` recorded, under ``policy`` (which may have changed: the window
        is cut to the new size).  Raises GovernanceError for a snapshot it cannot read."""
        return cls(policy, snapshot)

    # -- internals -----------------------------------------------------------------------

    def _load(self, snapshot: dict[str, Any]) -> None:
        try:
            if snapshot["v"] != SNAPSHOT_VERSION:
                raise ValueError(f"version {snapshot['v']!r}, expected {SNAPSHOT_VERSION}")
            state = BreakerState(snapshot["state"])
            window = [(float(at), bool(failed), bool(slow)) for at, failed, slow in snapshot["window"]]
            open_until = None if snapshot["open_until"] is None else float(snapshot["open_until"])
            generation, consecutive = int(snapshot["generation"]), int(snapshot["consecutive"])
            reopens, probes_ok = int(snapshot["reopens"]), int(snapshot["probes_ok"])
            probes = sorted(float(t) for t in snapshot["probes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise GovernanceError(f"unreadable breaker snapshot: {exc!r}", snapshot=repr(snapshot)[:500]) from exc
        self._state, self._generation, self._consecutive = state, generation, consecutive
        for at, failed, slow in window:
            self._window.add(at, failed, slow)
        self._open_until, self._reopens = open_until, reopens
        self._probes, self._probes_ok = probes, probes_ok

    def _check_trip(self, now: float) -> Transition | None:
        p, w = self.policy, self._window
        if p.consecutive_failures is not None and self._consecutive >= p.consecutive_failures:
            return self._open(TransitionReason.CONSECUTIVE_FAILURES, now, f"{self._consecutive} failures in a row")
        if len(w) < p.min_calls:
            return None
        if p.failure_rate is not None and w.failures >= p.failure_rate * len(w):
            return self._open(TransitionReason.FAILURE_RATE, now,
                              f"{w.failures} of the last {len(w)} calls failed (rate >= {p.failure_rate:g})")
        if p.slow_call is not None and w.slow >= p.slow_rate * len(w):
            return self._open(TransitionReason.SLOW_RATE, now,
                              f"{w.slow} of the last {len(w)} calls took over {p.slow_call:g} s "
                              f"(rate >= {p.slow_rate:g})")
        return None

    def _record_probe(self, result: CallResult, slow: bool, duration: float, now: float) -> Transition | None:
        if not self._probes:
            return None  # no probe in flight: a straggler recorded without its generation
        self._probes.pop(0)  # which probe this was is unknown: the oldest frees its slot
        if result is CallResult.BUSINESS_ERROR:
            return None  # not counted: its slot is free for another probe
        if result is CallResult.FAILURE:
            return self._reopen(TransitionReason.PROBE_FAILED, now, "a half-open probe failed")
        if slow:
            return self._reopen(TransitionReason.PROBE_SLOW, now,
                                f"a half-open probe took {duration:g} s (over {self.policy.slow_call:g} s)")
        self._probes_ok += 1
        if self._probes_ok < self.policy.half_open_probes:
            return None
        self._reopens = 0
        return self._move(BreakerState.CLOSED, TransitionReason.PROBES_SUCCEEDED, now,
                          f"{self._probes_ok} probe(s) succeeded")

    def _reopen(self, reason: TransitionReason, now: float, detail: str) -> Transition:
        self._reopens += 1
        return self._open(reason, now, detail)

    def _open(self, reason: TransitionReason, now: float, detail: str) -> Transition:
        p = self.policy
        period = min(p.open_for * p.open_for_factor ** self._reopens, p.open_for_max)
        transition = self._move(BreakerState.OPEN, reason, now, f"{detail}; open for {period:g} s")
        self._open_until = now + period
        return transition

    def _move(self, to: BreakerState, reason: TransitionReason, now: float, detail: str,
              who: str | None = None) -> Transition:
        """Every transition goes here: a new generation, an empty window, no probes."""
        transition = Transition(self._state, to, reason, now, detail, who)
        self._state = to
        self._generation += 1
        self._window.clear()
        self._consecutive = 0
        self._open_until = None
        self._probes = []
        self._probes_ok = 0
        return transition
