"""The semantic breaker: trip when an agent's recent outputs drift from what they should be.

A :class:`Scorer` rates one output: a float in ``[0, 1]``, higher meaning
more drift (off topic, off policy, a tone the agent should not take...).  The
scorer is the user's: a deterministic function in tests, a small model in
production.  A :class:`DriftMonitor` keeps the scores of the last outputs and
trips when they drift past its :class:`DriftPolicy`'s threshold.  Pure: the
caller passes ``now`` and serialises the calls; the monitor calls the scorer
and nothing else.

Semantics, each an invariant the tests check:

* **The statistic is the plain mean** of the last ``window`` scores, not an
  EWMA: it is explainable ("the last 20 answers averaged 0.7"), bounded in
  memory, and forgets an output exactly ``window`` outputs later.
* **Trip.**  While CLOSED, after each observed output, if the window holds at
  least ``min_samples`` scores and their mean is ``>= threshold``, the
  monitor moves to OPEN and :meth:`DriftMonitor.observe` returns the
  :class:`~governance.Transition` (reason ``DRIFT``), for the caller to notify
  operators or pull the kill switch.
* **OPEN holds** until an operator's :meth:`DriftMonitor.reset`: drift is
  not a transient fault that a probe can clear.  Outputs observed while OPEN
  are still scored and kept (so the operator sees the current mean), but
  cause no transition.
* **Reset** closes the monitor and empties the window: the agent starts
  afresh, and min_samples new outputs are needed before it can trip again.
* **A bad score** (not a number, or outside ``[0, 1]``) raises
  :class:`~governance.GovernanceError` and is not kept: a faulty scorer must
  not pass for a calm agent.

Only CLOSED and OPEN of :class:`~governance.BreakerState` are used.
Snapshots are msgpack-friendly dicts (the scorer and policy are not in them).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol

from pydantic import Field, model_validator

from ._breaker import BreakerState, Transition, TransitionReason
from ._policy import Policy
from .exceptions import GovernanceError

__all__ = ["DriftMonitor", "DriftPolicy", "Scorer"]

SNAPSHOT_VERSION = 1


class Scorer(Protocol):
    """Rates one output: a float in ``[0, 1]``, higher = more drift.  Should be deterministic."""

    def __call__(self, output: Any, /) -> float: ...


class DriftPolicy(Policy):
    """When a drift monitor trips.  Frozen; raises :class:`PolicyError` when out of range."""


    #: The mean is taken over the last this many scores.
    window: int = Field(20, ge=1)
    #: No trip before the window holds this many scores.
    min_samples: int = Field(10, ge=1)
    #: Trip when the mean reaches this.
    threshold: float = Field(0.5, gt=0, le=1)


    @model_validator(mode="after")
    def _check(self) -> DriftPolicy:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed window ({self.window})")
        return self


class DriftMonitor:
    """The semantic breaker of one agent (see the module docstring)."""

    def __init__(self, policy: DriftPolicy, scorer: Scorer, snapshot: dict[str, Any] | None = None) -> None:
        """A closed monitor with no scores, or the one ``snapshot`` recorded (see :meth:`restore`)."""
        self.policy = policy
        self.scorer = scorer
        self._scores: deque[float] = deque(maxlen=policy.window)
        self._state = BreakerState.CLOSED
        self._since: float | None = None  # when it last changed state (None: never)
        if snapshot is not None:
            self._load(snapshot)

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def mean(self) -> float | None:
        """The mean of the scores in the window (None when it is empty)."""
        return math.fsum(self._scores) / len(self._scores) if self._scores else None

    @property
    def samples(self) -> int:
        return len(self._scores)

    def observe(self, output: Any, now: float) -> Transition | None:
        """Score ``output``; the transition to OPEN if the window now drifts past the threshold."""
        score = self.scorer(output)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
            # Also catches NaN: every comparison with it is false.
            raise GovernanceError(
                f"scorer {getattr(self.scorer, '__name__', type(self.scorer).__name__)} returned {score!r}; "
                "a drift score is a number in [0, 1]",
                score=repr(score),
            )
        self._scores.append(float(score))
        p = self.policy
        if self._state is not BreakerState.CLOSED or len(self._scores) < p.min_samples:
            return None
        mean = self.mean
        assert mean is not None
        if mean < p.threshold:
            return None
        return self._move(BreakerState.OPEN, TransitionReason.DRIFT, now,
                          f"the last {len(self._scores)} outputs scored {mean:.3f} on average "
                          f"(threshold {p.threshold:g})")

    def reset(self, who: str, now: float, detail: str = "") -> Transition | None:
        """An operator closes the monitor and empties its window (None if it was closed: the window is kept)."""
        if self._state is BreakerState.CLOSED:
            return None
        self._scores.clear()
        return self._move(BreakerState.CLOSED, TransitionReason.OPERATOR_RESET, now, detail, who)

    def snapshot(self) -> dict[str, Any]:
        """The monitor's state as a msgpack-friendly dict."""
        return {"v": SNAPSHOT_VERSION, "state": self._state.value, "since": self._since, "scores": list(self._scores)}

    @classmethod
    def restore(cls, policy: DriftPolicy, scorer: Scorer, snapshot: dict[str, Any]) -> DriftMonitor:
        """The monitor ``snapshot`` recorded, under ``policy`` (a smaller window keeps the newest
        scores).  Raises GovernanceError for a snapshot it cannot read."""
        return cls(policy, scorer, snapshot)

    def _load(self, snapshot: dict[str, Any]) -> None:
        try:
            if snapshot["v"] != SNAPSHOT_VERSION:
                raise ValueError(f"version {snapshot['v']!r}, expected {SNAPSHOT_VERSION}")
            state = BreakerState(snapshot["state"])
            if state is BreakerState.HALF_OPEN:
                raise ValueError("a drift monitor is never half-open")
            since = None if snapshot["since"] is None else float(snapshot["since"])
            scores = [float(s) for s in snapshot["scores"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise GovernanceError(f"unreadable drift snapshot: {exc!r}", snapshot=repr(snapshot)[:500]) from exc
        self._state, self._since = state, since
        self._scores.extend(scores)  # maxlen keeps the newest

    def _move(self, to: BreakerState, reason: TransitionReason, now: float, detail: str,
              who: str | None = None) -> Transition:
        transition = Transition(self._state, to, reason, now, detail, who)
        self._state, self._since = to, now
        return transition
