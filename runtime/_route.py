"""Where one agent is served now: its id, its namespace and the Ray actor hosting it.

An agent's host can change under a ref: Ray restarts the same actor, a
supervisor starts a new one under the agent's name, a warm spare or a host
on another node takes the agent over (see ``_directory``).  A ``Route`` is
the one place a ref keeps the actor it talks to and the one place it looks
the agent up again.  Both sides of a ref share it: the data plane
(``AgentRef``: asks following a restart, held tells looking for the new
incarnation) and the operators' calls (``AgentAdmin``), so whichever side
finds the new host first moves the other too.

Invariant: ``handle`` is the last host found for ``agent_id`` (or the one
the route was made with); it changes only through :meth:`find` and
:meth:`follow`, both of which resolve through the agent directory.
"""

from __future__ import annotations

from typing import Any

from . import _directory
from ._packed_handle import PackedHandle
from .exceptions import AgentNotFound

__all__ = ["DEFAULT_TIMEOUT", "Route", "host_lane", "same_actor"]

#: Seconds a call to an agent's host waits by default: an ask's timeout, an operator's call.
DEFAULT_TIMEOUT = 30.0


class Route:
    """The actor an agent is served by now, and how to find it again when that changes."""

    def __init__(self, agent_id: str, handle: Any, *, namespace: str) -> None:
        self.agent_id = agent_id
        self.namespace = namespace
        self._handle = handle

    @property
    def handle(self) -> Any:
        """The Ray actor handle calls go to now."""
        return self._handle

    def lookup(self) -> Any | None:
        """The actor hosting the agent now (through the agent directory), or None if none is.

        The one place a ref resolves its agent: asks following a restart,
        held tells looking for the new incarnation and operators' calls all
        come here.
        """
        try:
            return _directory.resolve(self.agent_id, namespace=self.namespace)
        except AgentNotFound:
            return None

    def find(self) -> bool:
        """Use whatever actor hosts the agent now; False (handle unchanged) if none is registered."""
        handle = self.lookup()
        if handle is None:
            return False
        self._handle = handle
        return True

    def follow(self) -> bool:
        """Point at the agent's current host if it is another actor; whether it moved."""
        handle = self.lookup()
        if handle is None:
            return False  # not registered right now (being restarted): the caller tries again later
        if same_actor(handle, self._handle):
            return False
        self._handle = handle
        return True

    def __repr__(self) -> str:
        return f"Route({self.agent_id!r}, namespace={self.namespace!r})"


def same_actor(a: Any, b: Any) -> bool:
    """Whether two Ray actor handles name the same actor (a restarted actor keeps its id).

    A packed agent's handle (``PackedHandle``) names its packed host's actor.
    Ray's public API has no way to read a handle's actor id: ``_actor_id`` is
    Ray's private property, read here and nowhere else in the runtime, so a
    Ray upgrade that renames it breaks this one function.
    """
    a, b = (h.host if isinstance(h, PackedHandle) else h for h in (a, b))
    return bool(a._actor_id == b._actor_id)


def host_lane(handle: Any) -> tuple[str, str] | None:
    """A packed agent's handle: its host's actor id (hex, as Ray's runtime context gives it inside the
    host) and its lane; None for an actor of its own.  (``_actor_id``: see :func:`same_actor`.)"""
    if not isinstance(handle, PackedHandle):
        return None
    return handle.host._actor_id.hex(), handle.lane
