"""An agent's metrics in Ray's metrics system: on each node's metrics export port, scraped by Prometheus.

:class:`RayExport` copies a ``prometheus_client`` registry into
``ray.util.metrics`` every ``interval`` seconds, from a thread of its own:
Ray's per-call cost (about 2.5 us a counter increment, ``benchmarks``) stays
off the handling path, which only pays the registry's (``_metrics``).  Ray then
serves every series on the node's metrics export port with the prefix
``ray_`` (``garrison_messages_total`` is ``ray_garrison_messages_total``),
beside its own, and lists the ports for Prometheus in the session's
``prom_metrics_service_discovery.json`` (written while Ray's dashboard runs;
README, *Metrics*).

The copy, by family type:

* counter -- a Ray ``Counter`` of the same name (``_total``), increased by
  what the sample grew since the last copy;
* gauge -- a Ray ``Gauge``, set;
* histogram -- its cumulative ``_bucket`` (with ``le``), ``_sum`` and
  ``_count`` series as Ray gauges, set: Ray's own histogram takes one
  observation at a time, and ``histogram_quantile`` over ``rate`` of the
  ``_bucket`` series works on them as on any histogram.

Every series carries ``agent`` and ``agent_class`` (the spec's class path)
besides its own labels, and Ray adds its own (node, worker, session).
Invariant: a series is only ever copied from one registry per process (a
host has one agent), so a counter's delta is what that agent counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry

__all__ = ["EXPORT_INTERVAL", "RayExport"]

log = logging.getLogger("garrison.metrics")

#: Seconds between copies: well inside Ray's own report interval (10 s by default), so a scrape
#: sees values at most one interval older than Ray's own.
EXPORT_INTERVAL = 2.0
_SKIPPED_SUFFIXES = ("_created",)  # prometheus_client's creation-time samples: not data


class RayExport:
    """Copies ``registry`` into Ray's metrics (see module docstring); :meth:`start`, :meth:`stop`."""

    def __init__(self, registry: CollectorRegistry, *, tags: dict[str, str], interval: float = EXPORT_INTERVAL) -> None:
        self.registry = registry
        self.tags = tags  # on every series (``agent_class``); ``agent`` comes with the samples
        self.interval = interval
        self._metrics: dict[str, Any] = {}  # series name -> the Ray metric
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # counter sample -> value copied
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one copy at a time: a counter's delta is taken once
        self._thread = threading.Thread(target=self._run, name="garrison-metrics", daemon=True)
        self.copies = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """One last copy (the state the agent stopped in), then no more."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.copy()

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # below the handling thread, like the other background work
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.wait(self.interval):
            self.copy()

    def copy(self) -> None:
        """Copy every sample once; a failure is logged, never raised (metrics never stop an agent)."""
        try:
            with self._lock:
                self._copy_all()
        except Exception:  # noqa: BLE001 - Ray's metrics or a collector failing: logged, the agent goes on
            log.exception("copying the metrics to Ray failed")

    def _copy_all(self) -> None:
        for family in self.registry.collect():
            for sample in family.samples:
                if not sample.name.endswith(_SKIPPED_SUFFIXES):
                    self._copy(family.type, family.documentation, sample.name, sample.labels, sample.value)
        self.copies += 1

    def _copy(self, kind: str, doc: str, name: str, labels: dict[str, str], value: float) -> None:
        tags = {**labels, **self.tags}
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = self._make(kind, doc, name, tuple(sorted(tags)))
        if kind == "counter":
            key = (name, tuple(sorted(tags.items())))
            delta = value - self._last.get(key, 0.0)
            self._last[key] = value
            if delta > 0:
                metric.inc(delta, tags=tags)
        else:
            metric.set(value, tags=tags)

    @staticmethod
    def _make(kind: str, doc: str, name: str, tag_keys: tuple[str, ...]) -> Any:
        from ray.util.metrics import Counter, Gauge

        cls = Counter if kind == "counter" else Gauge
        return cls(name, description=doc or name, tag_keys=tag_keys)
