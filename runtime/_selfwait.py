"""Asks that could only time out: from a handler, to what would have to handle them on the same thread.

An agent handles one message at a time, so a handler that asks its own agent
waits for a reply that can only come once it has returned: the ask would wait
out its whole deadline and fail as an ``AskTimeout``, looking like a slow
agent.  A packed host's lane (``_packed``) is one thread for every agent hashed
to it, so the same holds for an ask from a packed agent's handler to another
agent on the same host and lane.  A ref refuses such an ask at once with
:class:`~runtime.exceptions.AskDeadlock` (:func:`refuse_self_wait`).

Invariant: both context variables are set only while a handler or hook runs
(``_invoke``; the lane by the packed host around a delivery), so asks from
any other thread -- a ticker, a worker loop, a driver -- are never refused.
Not detected: longer cycles (A's handler asks B, whose handler asks A); those
still end at their deadline.
"""

from __future__ import annotations

import contextvars
from typing import Any

from ._route import host_lane
from .exceptions import AskDeadlock

__all__ = ["current_asker", "current_lane", "refuse_self_wait"]

#: The id of the agent whose handler or hook runs in this context.
current_asker: contextvars.ContextVar[str | None] = contextvars.ContextVar("garrison_asker", default=None)
#: While a packed host delivers on one of its lanes: its actor id (hex) and the lane.
current_lane: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("garrison_lane", default=None)


def refuse_self_wait(recipient: str, handle: Any) -> None:
    """Raise AskDeadlock if an ask to ``recipient`` (served by ``handle``) from here could only time out."""
    asker = current_asker.get()
    if asker is None:
        return
    if recipient == asker:
        raise AskDeadlock(
            f"agent {asker!r} asked itself from a handler: it handles one message at a time, so the reply could "
            "only come after the handler returned; send it a message instead (self.send), or call the method",
            agent_id=asker, recipient=recipient, lane=None)
    lane = current_lane.get()
    if lane is not None and host_lane(handle) == lane:
        raise AskDeadlock(
            f"packed agent {asker!r} asked {recipient!r} from a handler, and both are served by {lane[1]} "
            "of the same packed host, which handles one message at a time: the reply could only come after "
            "the handler returned; send it a message instead (send/tell)",
            agent_id=asker, recipient=recipient, lane=lane[1])
