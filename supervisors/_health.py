"""Hang detection: judging liveness probes, a pure function of the policy and the answers.

A probe is a call to the agent host's ``probe`` method, which runs in its own
concurrency group, off the handling thread: a busy agent still answers, and
says how long its current handler has been running (``handler_running_for``).
So two signals make a child *suspect*:

* ``missed_limit`` probes in a row got no answer within ``timeout`` (the whole
  process is stuck, e.g. a C extension holding the GIL);
* the answer says a handler has been running longer than ``handler_limit``
  (a handler loops forever, or waits on something that never comes).

A busy child whose handler runs for less than ``handler_limit`` is healthy.
The supervisor then applies ``action``: restart it, or quarantine it.
Probes go out every ``interval`` whether or not earlier ones answered
(``supervisors/_probing.py``).  Worst-case detection time, from the moment
the hang starts: ``handler_limit + interval`` for a stuck handler,
``missed_limit * interval + timeout`` for a stuck process; plus the time of
the probe call itself (milliseconds).

A probe answer also says whether the agent is *degraded* (its checkpoint
store refuses shipping or checkpoints; see ``runtime._degraded``): the agent
still accepts messages, but what it accepts lives on its node only.  Each
episode (told apart by its ``since``) gets ``on_degraded`` once, as decided by
:func:`judge_degraded`: ignore it, notify (a ``degraded`` alert, and a
``recovered`` event when it clears), restart the child (exit reason
``degraded``, counted toward the intensity), or quarantine it.

A probe answer also counts the agent's *breaker trips* (a breaker of its
governed actions opened; see ``runtime._breakers``): each new trip becomes one
``breaker_tripped`` alert to the notifiers (:func:`judge_trips`).  Pulling the
kill switch on a trip is the agent's own policy (``AgentConfig.on_trip``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ._frozen import Frozen

__all__ = ["DegradedAction", "DegradedJudgement", "HangAction", "ProbePolicy", "Verdict", "judge_degraded",
           "judge_probe", "judge_trips"]


class HangAction(enum.Enum):
    """What the supervisor does with a suspect child."""

    #: Kill the process and start a new incarnation (counts toward intensity).
    RESTART = "restart"
    #: Stop routing to it and keep it, state and all, for investigation.
    QUARANTINE = "quarantine"


class DegradedAction(enum.Enum):
    """What the supervisor does, once per episode, with a child whose checkpoint store fails."""

    #: Nothing (the agent's status, probe and metrics still show it).
    IGNORE = "ignore"
    #: A ``degraded`` alert to the notifiers; a ``recovered`` event when it clears.
    NOTIFY = "notify"
    #: Notify, then kill and restart it (exit reason ``degraded``; counts toward intensity).
    RESTART = "restart"
    #: Notify, then quarantine it: it refuses messages and keeps its state.
    QUARANTINE = "quarantine"


class Verdict(enum.Enum):
    """One probe's outcome, as the policy sees it."""

    #: Answered, and no handler past its limit.
    HEALTHY = "healthy"
    #: No answer in time, but fewer than ``missed_limit`` in a row.
    LATE = "late"
    #: Hung: act on it.
    SUSPECT = "suspect"


class ProbePolicy(Frozen):
    """Liveness probing of one child (see module docstring)."""

    #: Seconds between probes.
    interval: float = Field(1.0, gt=0)
    #: Deadline of one probe, in seconds.
    timeout: float = Field(1.0, gt=0)
    #: Probes in a row without an answer before the child is suspect (K).
    missed_limit: int = Field(3, ge=1)
    #: Seconds one handler may run before the child is suspect; None: no limit.
    handler_limit: float | None = Field(None, gt=0)
    action: HangAction = HangAction.RESTART
    #: What a degraded child gets (see module docstring).
    on_degraded: DegradedAction = DegradedAction.NOTIFY


def judge_probe(policy: ProbePolicy, missed: int, answer: dict[str, Any] | None) -> tuple[int, Verdict]:
    """``(missed', verdict)`` after one probe; ``answer`` is None when it got no answer in time.

    ``missed`` counts probes missed in a row; any answer resets it.
    """
    if answer is None:
        missed += 1
        return missed, Verdict.SUSPECT if missed >= policy.missed_limit else Verdict.LATE
    running = answer.get("handler_running_for")
    if policy.handler_limit is not None and running is not None and running > policy.handler_limit:
        return 0, Verdict.SUSPECT
    return 0, Verdict.HEALTHY


@dataclass(frozen=True)
class DegradedJudgement:
    """One probe answer's consequence for the degraded policy."""

    #: ``since`` of the episode acted on so far (None: none, or it cleared); pass it to the next call.
    known: float | None
    #: What to do now: None when nothing is new (healthy, the same episode, or no answer).
    action: DegradedAction | None = None
    #: The episode acted on before has cleared (tell the notifiers unless ignored).
    cleared: bool = False


def judge_degraded(policy: ProbePolicy, known: float | None, answer: dict[str, Any] | None) -> DegradedJudgement:
    """Act on each degraded episode once: a new ``since`` gets ``policy.on_degraded``.

    ``known`` is the ``since`` of the episode already acted on (None at first);
    an unanswered probe (``answer`` None) changes nothing.
    """
    if answer is None:
        return DegradedJudgement(known)
    degraded = answer.get("degraded")
    if not degraded:
        return DegradedJudgement(None, cleared=known is not None)
    since = degraded.get("since")
    if since == known:
        return DegradedJudgement(known)
    return DegradedJudgement(since, action=policy.on_degraded)


def judge_trips(known: int, answer: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
    """Tell operators of each breaker trip once: ``(count now known, the trips to report or None)``.

    ``known`` is how many of this incarnation's trips were reported (0 at
    first); an unanswered probe, or an answer without new trips, reports nothing.
    """
    trips = None if answer is None else answer.get("breaker_trips")
    if not trips or trips["count"] <= known:
        return known, None
    new = trips["count"] - known
    return trips["count"], {**trips, "new": new, "recent": trips["recent"][-new:]}
