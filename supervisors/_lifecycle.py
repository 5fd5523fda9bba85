"""Lifecycle states of a supervisor and of each of its children, as seen by the supervisor."""

from __future__ import annotations

import enum

from .exceptions import SupervisorNotRunning

__all__ = ["ChildState", "SupervisorState", "require"]


class SupervisorState(enum.Enum):
    """Where a supervisor is in its life.  Transitions::

        STARTING -> RUNNING -> STOPPING -> STOPPED
           |           |  ^
           |           |  +-- release ---------+
           |           +--> QUARANTINED -------+    (root: intensity exceeded)
           |           +--> HALTED                  (kill switch; children halted, kept)
           |           +--> ESCALATED               (non-root: intensity exceeded; parent decides)
           +--> FAILED                              (a child failed to start)
    """

    #: Starting its children in order; calls other than introspection wait.
    STARTING = "starting"
    #: Supervising: crashes and hangs are acted on per policy.
    RUNNING = "running"
    #: Stopping its children in reverse order.
    STOPPING = "stopping"
    #: All children stopped; nothing is supervised.
    STOPPED = "stopped"
    #: Root only: intensity exceeded, children stopped with state kept, an alert raised; waits for release.
    QUARANTINED = "quarantined"
    #: A kill switch was pulled on the subtree: children halted, nothing restarts.
    HALTED = "halted"
    #: Intensity exceeded under a parent: children stopped, the supervisor exits for its parent to act.
    ESCALATED = "escalated"
    #: A child failed to start during start-up; the ones started were stopped again.
    FAILED = "failed"


class ChildState(enum.Enum):
    """One child, as its supervisor sees it."""

    #: Being spawned; not yet ready.
    STARTING = "starting"
    #: Ready and watched.
    RUNNING = "running"
    #: Exited abnormally; a restart is scheduled (backoff) or in progress.
    RESTARTING = "restarting"
    #: Not running and not to be restarted (a transient that exited normally, or stopped by the supervisor).
    STOPPED = "stopped"
    #: Routing stopped, state kept for investigation (hang policy, or root quarantine).
    QUARANTINED = "quarantined"
    #: Kill switch pulled: no handler runs, state checkpointed and kept.
    HALTED = "halted"


def require(state: SupervisorState, allowed: tuple[SupervisorState, ...], what: str, name: str) -> None:
    """Raise SupervisorNotRunning("cannot X while Y") unless ``state`` is allowed."""
    if state not in allowed:
        raise SupervisorNotRunning(
            f"supervisor {name!r} cannot {what} while {state.name}"
            + (" (release it first)" if state in (SupervisorState.QUARANTINED, SupervisorState.HALTED) else ""),
            supervisor=name,
            state=state.value,
        )
