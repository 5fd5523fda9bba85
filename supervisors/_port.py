"""What a supervisor's collaborators may ask of it: the whole list, in one place.

The supervisor (:class:`supervisors._supervisor.SupervisorActor`) owns its
lifecycle state, the children table, the restart lock and the restart
intensity window.  Its collaborators (the prober in ``_probing``, the spare
pool in ``_standby``, the operators' calls in ``_operations``, deploys in ``_deploy``) never touch
those directly: each is given a :class:`SupervisorPort` in its constructor and
acts on the supervisor only through it.  The children's records
(:class:`supervisors._child.Child`) are shared data: a collaborator reads and
sets a child's fields, all on the supervisor's one event loop.  Helpers that
decide nothing (``Incarnations``, ``Spawner``, ``EventLog``) get only the few
callables they use, not the port.

The port is a record of callbacks, so a unit test builds one from a fake that
records the calls (no Ray, no actor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from ._child import Child
from ._lifecycle import SupervisorState
from ._spec import ChildSpec
from ._strategy import ExitReason

__all__ = ["Emit", "SupervisorPort"]


class Emit(Protocol):
    """Record an event (kept for introspection, sent to the notifiers)."""

    def __call__(self, kind: str, child: str | None, *, who: str = "supervisor", why: str = "",
                 details: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True)
class SupervisorPort:
    """The supervisor's services to its collaborators (see module docstring)."""

    #: Record an event: ``emit(kind, child_id, who=, why=, details=)``.
    emit: Emit
    #: Run a coroutine as a task of the supervisor (kept until done; a failure becomes an ``internal_error`` event).
    spawn_task: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    #: The supervisor's lifecycle state now.
    state: Callable[[], SupervisorState]
    #: The supervisor's status (what ``SupervisorActor.status`` returns).
    status: Callable[[], dict[str, Any]]
    #: The child with this id (raises ChildNotFound).
    child: Callable[[str], Child]
    #: Every child, in start order.
    children: Callable[[], list[Child]]
    #: Start a child (again), holding the restart lock (raises ChildStartError).
    start_child: Callable[[Child], Awaitable[None]]
    #: Holding the restart lock, stop a child if it runs (graceful, then kill), then forget it (``spec``
    #: None) or start it again under ``spec`` (a deploy): ``(child, why, spec)``.
    replace_child: Callable[[Child, str, ChildSpec | None], Awaitable[None]]
    #: Kill a child's process at once, then act on its exit as if it had died: ``(child, reason, failure)``.
    kill_and_exit: Callable[[Child, ExitReason, str], Awaitable[None]]
    #: Quarantine a child (the supervisor's own decision, e.g. a hang): ``(child, why)``; the
    #: ``quarantined`` event goes out with the state change.
    quarantine_child: Callable[[Child, str], Awaitable[None]]
    #: The kill switch on the whole subtree: the supervisor becomes HALTED (nothing under it restarts).
    halt_subtree: Callable[[], None]
    #: Lift the kill switch on the whole subtree: HALTED -> RUNNING (raises SupervisorNotRunning otherwise).
    lift_halt: Callable[[], None]
    #: Release a quarantined supervisor: QUARANTINED -> RUNNING, the intensity window emptied, and every
    #: child started again holding the restart lock (raises SupervisorNotRunning unless QUARANTINED).
    release_subtree: Callable[[], Awaitable[None]]
