"""Which children stop and start after one exits: OTP's strategies as a pure function.

Given the children in start order, the one that exited and why,
:func:`plan_restart` returns a :class:`Plan`.  The rules (``supervisor.erl``):

* The exited child's restart type decides whether anything happens:
  permanent always restarts; transient restarts only after an abnormal exit;
  temporary never restarts and is removed.  A transient child that exited
  normally stays in the list, stopped.
* If a restart is due, the strategy picks the affected children:
  one_for_one and simple_one_for_one: the exited child alone;
  one_for_all: all children; rest_for_one: the exited child and every child
  after it in start order.
* The affected children still running are stopped in reverse start order;
  then the affected children start in start order.  A temporary child among
  them is stopped and removed, never started.  As in OTP, a non-temporary
  affected child that was already stopped (a transient that exited normally)
  is started again with the others.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ._spec import RestartType, Strategy

__all__ = ["ChildView", "ExitReason", "Plan", "plan_restart", "should_restart"]


class ExitReason(enum.Enum):
    """Why a child is no longer running."""

    #: It stopped gracefully of its own accord (or someone outside the supervisor stopped it).
    NORMAL = "normal"
    #: Its supervisor (or an operator through it) stopped it.
    SHUTDOWN = "shutdown"
    #: Its process died: a crash, a SIGKILL, a lost node.
    CRASH = "crash"
    #: Hang detection judged it stuck and the supervisor killed it.
    HUNG = "hung"
    #: It failed to start (constructor, restore or on_start).
    START_FAILED = "start_failed"
    #: Its checkpoint store failed (degraded) and its probe policy says restart; the supervisor killed it.
    DEGRADED = "degraded"

    @property
    def abnormal(self) -> bool:
        return self not in (ExitReason.NORMAL, ExitReason.SHUTDOWN)


@dataclass(frozen=True)
class ChildView:
    """What the planner needs to know of one child."""

    id: str
    restart: RestartType
    running: bool


@dataclass(frozen=True)
class Plan:
    """What to do after a child exited.

    ``restart`` is True when anything starts again (it then counts as one
    restart toward the intensity, however many children it restarts).
    """

    restart: bool
    #: Running children to stop, in reverse start order (never the exited one).
    stop: tuple[str, ...] = ()
    #: Children to start, in start order.
    start: tuple[str, ...] = ()
    #: Children dropped from the supervisor (temporary ones).
    remove: tuple[str, ...] = ()


def should_restart(restart: RestartType, reason: ExitReason) -> bool:
    """The restart-type x exit-reason rule for the child that exited."""
    if restart is RestartType.PERMANENT:
        return True
    if restart is RestartType.TRANSIENT:
        return reason.abnormal
    return False


def plan_restart(strategy: Strategy, children: Sequence[ChildView], exited: str, reason: ExitReason) -> Plan:
    """The plan after child ``exited`` stopped for ``reason`` (see module docstring)."""
    index = next((i for i, c in enumerate(children) if c.id == exited), None)
    if index is None:
        raise KeyError(exited)
    child = children[index]
    if not should_restart(child.restart, reason):
        return Plan(restart=False, remove=(exited,) if child.restart is RestartType.TEMPORARY else ())
    if strategy in (Strategy.ONE_FOR_ONE, Strategy.SIMPLE_ONE_FOR_ONE):
        affected = [child]
    elif strategy is Strategy.ONE_FOR_ALL:
        affected = list(children)
    else:
        affected = list(children[index:])
    stop = tuple(c.id for c in reversed(affected) if c.id != exited and c.running)
    remove = tuple(c.id for c in affected if c.id != exited and c.restart is RestartType.TEMPORARY)
    start = tuple(c.id for c in affected if c.id == exited or c.restart is not RestartType.TEMPORARY)
    return Plan(restart=True, stop=stop, start=start, remove=remove)
