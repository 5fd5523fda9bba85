"""A test's deadline that moves with a supervisor's events.

Beside a CPU hog on 2 cores a cold restart takes about 10 s and restarts queue
behind one another, so a fixed budget fails tests whose supervisor is still
working.  :class:`Quiet` gives up only after ``seconds`` without a supervisor
event (a start, exit, restart...): a stuck tree still fails, a slow one does not.
"""

from __future__ import annotations

import time


class Quiet:
    """``passed()`` is True once ``seconds`` have gone by since the supervisor's latest event."""

    def __init__(self, sup, seconds: float) -> None:
        self._sup, self._seconds = sup, seconds
        history = sup.events()
        self._next = history[-1]["index"] + 1 if history else 0
        self._until = time.monotonic() + seconds

    def passed(self) -> bool:
        """Cheap until the deadline; past it, one look at the supervisor's events (which may move it)."""
        if time.monotonic() < self._until:
            return False
        events = self._sup.events(self._next)
        if events:
            self._next = events[-1]["index"] + 1
            self._until = time.monotonic() + self._seconds
            return False
        return True
