"""A supervisor's event log (every event kept for introspection, the newest EVENT_LIMIT, and sent to the
notifiers), and its background tasks, whose failures become events.

Invariant: notifying never runs on the supervisor's event loop; the
notifiers run one at a time, in event order, on one thread of their own, so a
slow webhook never stalls supervision.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine
from typing import Any

from ._calls import first_line
from ._metrics import EventCounts
from ._notifier import Event, Notifier, notify_all

__all__ = ["EVENT_LIMIT", "EventLog", "TaskSet"]

log = logging.getLogger("garrison.supervisor")

#: Events kept for introspection.
EVENT_LIMIT = 2000


class EventLog:
    """The events of supervisor ``name``, numbered from 0 (see module docstring)."""

    def __init__(self, name: str, notifiers: tuple[Notifier, ...] = (), counts: EventCounts | None = None) -> None:
        self.name = name
        self._notifiers = tuple(notifiers)
        self._counts = counts  # the events by kind and child, for the metrics (``_metrics``)
        self._notify_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="garrison-notify")
        self._events: list[dict[str, Any]] = []
        self._count = 0

    def emit(self, kind: str, child: str | None, *, who: str = "supervisor", why: str = "",
             details: dict[str, Any] | None = None) -> None:
        """Record one event and hand it to the notifiers (off the event loop)."""
        event = Event(kind, self.name, child, who, why, details=dict(details or {}))
        if self._counts is not None:
            self._counts.count(kind, child)
        self._count += 1
        self._events.append({"index": self._count - 1, **event.to_dict()})
        del self._events[:-EVENT_LIMIT]
        if self._notifiers:
            self._notify_pool.submit(notify_all, self._notifiers, event)

    def since(self, after: int = 0) -> list[dict[str, Any]]:
        """Events with ``index >= after``, oldest first."""
        return [e for e in self._events if e["index"] >= after]


class TaskSet:
    """A supervisor's background tasks: kept until done; one that fails becomes an ``internal_error`` event.

    Invariant: no task's failure goes unreported (logged, and an event), and
    none is garbage-collected while it runs.
    """

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task on the running loop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor %s: task failed", self._events.name, exc_info=task.exception())
            self._events.emit("internal_error", None, why=first_line(task.exception()))
