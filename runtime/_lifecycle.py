"""The agent's lifecycle state machine."""

from __future__ import annotations

import enum

__all__ = ["AgentState", "Lifecycle", "can_handle"]


class AgentState(enum.Enum):
    """Where an agent host is in its life.  Transitions::

        STARTING -> RESTORING -> RUNNING -> DRAINING -> STOPPED
                         |           |
                         v           +--> QUARANTINED / HALTED  (supervisors, operators) -> RUNNING (release / unhalt)
                       FAILED        +--> FENCED  (a later incarnation exists; final)
    """

    #: The host process exists; nothing is opened yet.
    STARTING = "starting"
    #: Rebuilding the working state from local LMDB, or checkpoint + journal.
    RESTORING = "restoring"
    #: Handling messages.
    RUNNING = "running"
    #: A stop was asked for: messages already accepted finish, new ones are refused.
    DRAINING = "draining"
    #: Final checkpoint written, files closed; handles nothing.
    STOPPED = "stopped"
    #: Routing stopped by a supervisor or an operator; state, mailbox and checkpoint kept for
    #: investigation.  Recorded in the agent's state: a restart comes back QUARANTINED until ``release``.
    QUARANTINED = "quarantined"
    #: A kill switch was pulled: no handler runs, no outgoing action leaves.  Recorded in the
    #: agent's state: a restart comes back HALTED until ``unhalt`` (then QUARANTINED if it was).
    HALTED = "halted"
    #: A later incarnation claimed a newer epoch: nothing is handled, written or sent, ever again.
    FENCED = "fenced"
    #: Start or restore failed; the reason is in the status.
    FAILED = "failed"


def can_handle(state: AgentState) -> bool:
    """Only a RUNNING agent runs handlers."""
    return state is AgentState.RUNNING


class Lifecycle:
    """One incarnation's current :class:`AgentState` and why it is not running.

    Shared by the host's collaborators (inbox, operations, background work),
    which read it freely and change it only through :meth:`set`, so a state
    and its reason always change together.
    """

    __slots__ = ("failure", "state")

    def __init__(self, state: AgentState = AgentState.STARTING) -> None:
        self.state = state
        #: Why the agent does not handle messages (None while RUNNING or when nothing went wrong).
        self.failure: str | None = None

    def set(self, state: AgentState, failure: str | None = None) -> None:
        self.state = state
        self.failure = failure

    def describe(self) -> str:
        """``NAME`` or ``NAME (why)``, for errors that say why nothing was handled."""
        return self.state.name + (f" ({self.failure})" if self.failure else "")
