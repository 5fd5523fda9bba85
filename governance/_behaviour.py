"""Behavioural drift: an agent's recent actions against a baseline of its own, per agent version.

Every governed call an agent's gateway settles is an *observation*: its action
tag, its outcome code (``ok``, ``failed``, ``refused``, ``pending``, ``denied``,
...), its cost and how long it took.  A :class:`BehaviourMonitor` keeps, per
agent version (the manifest hash, ``runtime._version``), a *baseline*: the
first ``baseline`` observations under that version; and a *recent window*:
the last ``window`` ones after it.  Once the window is full, each observation
compares the two and gives a :class:`BehaviourReport`:

``action_mix``   total variation distance between the two windows' action-tag
                 distributions (0: the same mix; 1: no tag in common)
``outcomes``     total variation distance between their outcome-code distributions
                 (error, refusal, approval and denial rates all move it)
``cost``         relative change of the mean cost, capped at 1
``latency``      relative change of the mean duration, capped at 1

``distance`` is the largest of them, each times its weight (``weights``;
latency counts half by default): explainable ("the action mix moved by
0.8"), each bounded in ``[0, 1]``.  Past ``flag_at`` the agent is *flagged*
for review (once per version until an operator resets the monitor); past
``pause_at`` (None: never) it is *paused* through the kill switch.  Relative
changes use ``max(baseline mean, floor)`` as the denominator (``cost_floor``,
``latency_floor``), so a baseline of zero cost does not turn a cent into
infinite drift, nor a loaded machine a fast tool's millisecond.

Pure: ``observe`` takes what happened and returns what to do; no clock, no I/O.
Invariants: nothing is judged before both windows are full; a verdict is
given once per version and level (FLAG, then PAUSE), until :meth:`reset`; a
new version starts a new baseline (what the version does by design is its
own baseline, not drift).
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from ._policy import Policy

__all__ = ["STATISTICS", "BehaviourLevel", "BehaviourMonitor", "BehaviourPolicy", "BehaviourReport", "Observation"]


class BehaviourPolicy(Policy):
    """When behavioural drift flags an agent, and when it pauses it.  Frozen; PolicyError when out of range."""

    #: The first this many observations under a version are its baseline.
    baseline: int = Field(100, ge=1)
    #: The recent window compared with it.
    window: int = Field(50, ge=1)
    #: Flag the agent for review when the distance reaches this.
    flag_at: float = Field(0.3, gt=0, le=1)
    #: Pause it (kill switch) when the distance reaches this; None: flag only.
    pause_at: float | None = Field(0.6, gt=0, le=1)
    #: Relative changes of the mean cost divide by at least this (cost units) ...
    cost_floor: float = Field(0.01, gt=0)
    #: ... and of the mean latency by at least this (seconds): a fast tool taking 2 ms instead of
    #: 1 ms on a loaded machine is not drift.
    latency_floor: float = Field(0.1, gt=0)
    #: Each statistic counts toward the distance times its weight (0: ignored).
    weights: dict[str, float] = Field(default_factory=lambda: {"action_mix": 1.0, "outcomes": 1.0, "cost": 1.0,
                                                               "latency": 0.5})

    @model_validator(mode="after")
    def _check(self) -> BehaviourPolicy:
        if self.pause_at is not None and self.pause_at < self.flag_at:
            raise ValueError(f"pause_at ({self.pause_at}) must not be below flag_at ({self.flag_at})")
        if set(self.weights) - set(STATISTICS) or any(not 0 <= w <= 1 for w in self.weights.values()):
            raise ValueError(f"weights are in [0, 1], for {list(STATISTICS)}")
        return self


class BehaviourLevel(enum.Enum):
    NORMAL = "normal"
    FLAGGED = "flagged"
    PAUSED = "paused"


@dataclass(frozen=True)
class Observation:
    """One settled governed call."""

    tag: str
    code: str
    cost: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class BehaviourReport:
    """The comparison of the recent window with the baseline: each statistic, weighted, and the largest."""

    version: str
    #: statistic -> its weighted value in [0, 1] (:data:`STATISTICS`).
    values: dict[str, float]

    @property
    def distance(self) -> float:
        return max(self.values.values())

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "distance": round(self.distance, 4),
                **{k: round(v, 4) for k, v in self.values.items()}}

    def why(self) -> str:
        worst = max(self.values, key=self.values.__getitem__)
        return (f"behaviour drifted from its baseline by {self.distance:.2f} ({STATISTICS[worst]}) "
                f"under version {self.version[:19]}")


#: The statistics compared, and what each is called in a report's reason.
STATISTICS = {"action_mix": "action mix", "outcomes": "outcome codes", "cost": "mean cost",
              "latency": "mean latency"}


def _tvd(a: Counter[str], b: Counter[str]) -> float:
    """Total variation distance between two count distributions (each non-empty)."""
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def _relative(base: float, recent: float, floor: float) -> float:
    return min(1.0, abs(recent - base) / max(abs(base), floor))


@dataclass
class _Windows:
    baseline: list[Observation] = field(default_factory=list)
    recent: deque[Observation] = field(default_factory=deque)
    level: BehaviourLevel = BehaviourLevel.NORMAL


class BehaviourMonitor:
    """One agent's behavioural drift, per version (see the module docstring)."""

    def __init__(self, policy: BehaviourPolicy) -> None:
        self.policy = policy
        self._versions: dict[str, _Windows] = {}
        self.last: BehaviourReport | None = None

    def observe(self, version: str, obs: Observation) -> tuple[BehaviourLevel, BehaviourReport] | None:
        """Record ``obs`` under ``version``; a new level (FLAGGED or PAUSED) and why, once each."""
        w = self._versions.setdefault(version, _Windows(recent=deque(maxlen=self.policy.window)))
        if len(w.baseline) < self.policy.baseline:
            w.baseline.append(obs)
            return None
        w.recent.append(obs)
        if len(w.recent) < self.policy.window:
            return None
        self.last = report = self.compare(version, w.baseline, list(w.recent))
        level = BehaviourLevel.NORMAL
        if self.policy.pause_at is not None and report.distance >= self.policy.pause_at:
            level = BehaviourLevel.PAUSED
        elif report.distance >= self.policy.flag_at:
            level = BehaviourLevel.FLAGGED
        order = list(BehaviourLevel)
        if order.index(level) > order.index(w.level):  # only ever up, until reset
            w.level = level
            return level, report
        return None

    def compare(self, version: str, base: list[Observation], recent: list[Observation]) -> BehaviourReport:
        p = self.policy

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs)

        raw = {
            "action_mix": _tvd(Counter(o.tag for o in base), Counter(o.tag for o in recent)),
            "outcomes": _tvd(Counter(o.code for o in base), Counter(o.code for o in recent)),
            "cost": _relative(mean([o.cost for o in base]), mean([o.cost for o in recent]), p.cost_floor),
            "latency": _relative(mean([o.seconds for o in base]), mean([o.seconds for o in recent]), p.latency_floor),
        }
        return BehaviourReport(version, {k: v * p.weights.get(k, 1.0) for k, v in raw.items()})

    def level(self, version: str) -> BehaviourLevel:
        w = self._versions.get(version)
        return BehaviourLevel.NORMAL if w is None else w.level

    def reset(self, version: str) -> None:
        """An operator reviewed it: back to NORMAL, with a fresh baseline for the version."""
        self._versions.pop(version, None)
        self.last = None

    def status(self, version: str) -> dict[str, Any]:
        w = self._versions.get(version)
        return {"level": self.level(version).value,
                "baseline": 0 if w is None else len(w.baseline), "recent": 0 if w is None else len(w.recent),
                "last": None if self.last is None else self.last.describe()}
