"""Which of a packed host's agents stay open: least recently used, bounded, and closed when idle.

Pure: the clock is injected, nothing is opened or closed here.  The packed host
(``_packed``) records what it opened, used and closed, and asks
:meth:`ActiveSet.victims` what to passivate now.

Rules:

* An agent idle for its own ``idle_timeout`` (seconds since it last handled
  a message) is a victim.
* Past ``capacity`` open agents, the least recently used are victims too,
  as many as it takes to come back to ``capacity``.
* An agent the host says it must keep (a message in progress, an outbox not
  yet delivered) is never a victim; the bound is soft by that much.

Victims come least recently used first.  Bound: one entry per open agent.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ["ActiveSet"]


class ActiveSet:
    """The open agents of one packed host, in least-recently-used order (see module docstring)."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._clock = clock
        #: agent id -> (last used, idle timeout), least recently used first.
        self._open: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._open

    def ids(self) -> list[str]:
        """The open agents, least recently used first."""
        return list(self._open)

    def opened(self, agent_id: str, idle_timeout: float) -> None:
        self._open[agent_id] = (self._clock(), idle_timeout)
        self._open.move_to_end(agent_id)

    def touched(self, agent_id: str) -> None:
        """``agent_id`` was used now (a message, an operator's call); no-op if it is not open."""
        entry = self._open.get(agent_id)
        if entry is not None:
            self._open[agent_id] = (self._clock(), entry[1])
            self._open.move_to_end(agent_id)

    def closed(self, agent_id: str) -> None:
        self._open.pop(agent_id, None)

    def over(self) -> int:
        """How many agents are open beyond the capacity."""
        return max(0, len(self._open) - self.capacity)

    def victims(self, keep: Callable[[str], bool] = lambda _: False) -> list[str]:
        """Agents to passivate now, least recently used first: the idle ones, and enough more to come
        back to the capacity; none for which ``keep`` is true."""
        now = self._clock()
        excess = len(self._open) - self.capacity
        out = []
        for agent_id, (last, timeout) in self._open.items():
            if (excess > 0 or now - last >= timeout) and not keep(agent_id):
                out.append(agent_id)
                excess -= 1
        return out

    def next_due(self) -> float | None:
        """Seconds until the next open agent falls idle (0 if one already has); None if none is open."""
        if not self._open:
            return None
        now = self._clock()
        return max(0.0, min(last + timeout for last, timeout in self._open.values()) - now)
