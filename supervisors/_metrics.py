"""A supervisor's metrics: its events counted by kind and child, in Ray's metrics system.

``garrison_supervisor_events_total{supervisor, child, event}`` counts every
event the supervisor's :class:`~supervisors._events.EventLog` emits:
``restarted``, ``suspect`` (a probe found the child hung), ``quarantined``,
``degraded``, ``escalated``, ``deployed``, ... (README, *Supervisors*).  The
supervisor's process copies it into Ray's metrics like an agent's
(``runtime._export``), so it sits on the node's export port as
``ray_garrison_supervisor_events_total``.  ``child`` is empty for the
supervisor's own events; the label set is bounded by its children.

Invariant: :meth:`EventCounts.count` runs on the supervisor's event loop
only (``EventLog.emit``); a collection reads the counts from another thread
and never sees one go down.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from runtime._export import RayExport

__all__ = ["EventCounts", "event_counts"]


class EventCounts:
    """A collector of a supervisor's events by kind and child."""

    def __init__(self, supervisor: str) -> None:
        self.supervisor = supervisor
        self._counts: dict[tuple[str, str], int] = {}

    def count(self, kind: str, child: str | None) -> None:
        key = (child or "", kind)
        self._counts[key] = self._counts.get(key, 0) + 1

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("garrison_supervisor_events", "A supervisor's events by kind and child "
                                     "(restarted, suspect, quarantined, ...).", labels=["supervisor", "child", "event"])
        for (child, kind), n in sorted(dict(self._counts).items()):
            family.add_metric([self.supervisor, child, kind], n)
        yield family


def event_counts(supervisor: str) -> EventCounts:
    """The supervisor's event counts, copied into Ray's metrics every few seconds when Ray is up here."""
    import ray

    counts = EventCounts(supervisor)
    if ray.is_initialized():
        registry = CollectorRegistry(auto_describe=False)
        registry.register(counts)
        RayExport(registry, tags={}).start()
    return counts
