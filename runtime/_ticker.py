"""``Ticker``: the thread that tells an agent to sweep once a deadline it keeps has come.

Agents with deadlines (approval requests expiring, a contract net's bid and
commit deadlines, reservations lapsing) keep the earliest one in ``due``
(updated by their handlers, read by this thread: a float replaced whole).
The thread looks every ``every`` seconds and, once ``due`` has come, calls
``tell()`` -- which tells the agent its sweep message -- so the sweep runs as
a handler and commits (and sends) like any other.  Until the sweep sets the
real next deadline, ``due`` is pushed a little ahead: an agent that cannot
handle the sweep now (halted, quarantined) is not told again at every look,
which would only pile up dead letters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .exceptions import GarrisonError

__all__ = ["Ticker"]

log = logging.getLogger("garrison.agent")


class Ticker:
    """A daemon thread that calls ``tell()`` once ``due`` (an absolute time, kept up to date by the
    agent's handlers) has come; it looks every ``every`` seconds (see the module)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.due: float | None = None
        self._stopping = threading.Event()

    def start(self, name: str, tell: Callable[[], None]) -> None:
        threading.Thread(target=self._run, args=(tell,), name=name, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self, tell: Callable[[], None]) -> None:
        while not self._stopping.wait(self.every):
            due, now = self.due, time.time()
            if due is None or now < due:
                continue
            # Until the sweep sets the real one: an agent that cannot handle it now is not told every tick.
            self.due = now + max(2.0, 10 * self.every)
            try:
                tell()
            except GarrisonError as exc:  # stopping, halted: the next look tries again
                log.info("%s: sweep not sent: %s", threading.current_thread().name, exc)
