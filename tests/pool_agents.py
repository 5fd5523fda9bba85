"""Queue workers for the pool tests (importable by Ray's workers: tests/ is on their path)."""

from __future__ import annotations

import time
from typing import Any

from protocols import Message
from runtime import handler
from runtime.queue import QueueWorker

#: Seconds of CPU each item takes: enough that one worker falls behind a burst.
WORK_S = 0.02


class Doubler(QueueWorker):
    """Doubles the payload after ``WORK_S`` of work, counting what it did in its state."""

    def work(self, payload: Any) -> Any:
        end = time.perf_counter() + WORK_S
        while time.perf_counter() < end:  # the work itself: a deterministic stand-in for a real job
            pass
        self.state.increment("worked")
        return payload * 2


class SlowDoubler(QueueWorker):
    """Doubles the payload after ``SLOW_S`` of waiting (a slow call elsewhere): a batch outlasts its lease."""

    def work(self, payload: Any) -> Any:
        time.sleep(SLOW_S)  # the work's duration, not a synchronisation
        return payload * 2


#: Seconds each item of a ``SlowDoubler`` takes.
SLOW_S = 0.6


class Worked(Message, name="test.pool.worked"):
    pass


class CountingDoubler(Doubler):
    """A ``Doubler`` that says how many times ``work`` ran."""

    @handler
    def worked(self, msg: Worked) -> int:
        return self.state.get("worked", 0)
