"""Per-agent Prometheus metrics: counters and a histogram on the hot path, gauges read when collected.

Each host owns a private registry (one agent per process, but tests may run
several cores in one process).  :class:`AgentMetrics` holds what the
runtime counts as it goes: messages by outcome and handling times in
:class:`MessageCounts` (plain ints on the hot path), the rest in
``prometheus_client`` counters and gauges; :class:`StatusGauges`
reads what the agent's status says at each collection (lifecycle state,
outbox, dead letters, breakers, budget), so nothing on the hot path keeps
those up to date.  The registry is exported through Ray's metrics system by
``_export`` and read whole by ``ref.admin.metrics()``; ``System.metrics()``
merges the agents' texts with :func:`merge_expositions`.

Labels are bounded: ``agent`` (its id) on every series, plus outcome, source,
state, breaker or action tag where a metric has one -- never a message id.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from ._lifecycle import AgentState

__all__ = ["HANDLE_BUCKETS", "LIFECYCLE_STATES", "AgentMetrics", "MessageCounts", "StatusGauges", "merge_expositions"]

log = logging.getLogger("garrison.metrics")

#: Every value ``garrison_agent_state`` takes: one series each, so a change of state is a change of value.
LIFECYCLE_STATES = tuple(state.value for state in AgentState)


class AgentMetrics:
    """The agent's registry and what the runtime counts in it.

    ``per_message`` False (``AgentConfig.metrics``): handled messages are
    neither counted nor timed (the rest is), to measure what that costs.
    """

    def __init__(self, agent_id: str, *, per_message: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["agent"]
        self.messages = MessageCounts(agent_id, timed=per_message)
        self.registry.register(self.messages)
        self.actions = Counter(
            "garrison_actions", "Governed actions by tool tag and outcome code (success, refused, ...).",
            labels + ["tag", "code"], registry=self.registry,
        )
        self.checkpoints = Counter("garrison_checkpoints", "Checkpoints written.", labels, registry=self.registry)
        self.checkpoint_seconds = Gauge(
            "garrison_checkpoint_last_seconds", "Duration of the last checkpoint.", labels, registry=self.registry
        )
        self.seq = Gauge("garrison_journal_seq", "Last committed journal sequence number.", labels, registry=self.registry)
        self.shipped = Gauge("garrison_journal_shipped_seq", "Last shipped journal sequence number.", labels, registry=self.registry)
        self.restores = Counter("garrison_restores", "Host starts by restore source.", labels + ["source"], registry=self.registry)
        self.background_errors = Counter(
            "garrison_background_errors", "Failures of shipping or checkpointing.", labels, registry=self.registry
        )
        self.degraded = Gauge(
            "garrison_degraded", "1 while the checkpoint store refuses shipping or checkpoints (see status).",
            labels, registry=self.registry,
        )
        self.degraded.labels(agent_id).set(0)
        self.agent_id = agent_id
        self.per_message = per_message

    def outcome(self, outcome: str, count: int = 1) -> None:
        """``count`` messages that ended as ``outcome`` (not ``handled``: see :meth:`handled`)."""
        self.messages.count(outcome, count)

    def handled(self, seconds: float) -> None:
        """One message handled, in ``seconds`` from taking it to its commit."""
        if self.per_message:
            self.messages.handled(seconds)

    def handled_batch(self, count: int) -> None:
        """``count`` messages of one batch handled (one group commit: not timed one by one)."""
        if self.per_message:
            self.messages.handled_batch(count)

    def action(self, tag: str, code: str) -> None:
        self.actions.labels(self.agent_id, tag, code).inc()

    def watch(self, status: Callable[[], dict[str, Any]], gauges: Callable[[], dict[str, float]] | None = None) -> None:
        """Collect :class:`StatusGauges` from ``status`` (the agent's ``status()``) and the agent's own
        ``gauges`` (``Agent.gauges``) with the rest."""
        self.registry.register(StatusGauges(self.agent_id, status, gauges))

    def text(self) -> str:
        return generate_latest(self.registry).decode()


#: Upper bounds of ``garrison_handle_seconds``' buckets (seconds).
HANDLE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class MessageCounts:
    """A collector: ``garrison_messages_total`` by outcome, and ``garrison_handle_seconds``.

    The hot path's share is two additions and a bisection on plain ints
    (a ``prometheus_client`` counter and histogram cost about 1.1 us more a
    message, ``benchmarks/metrics_overhead``).  Invariant: :meth:`handled`
    and :meth:`handled_batch` are only called by the handling path, which
    runs under the core's lock (one call at a time); other outcomes, from any
    thread, take ``_lock``.  A collection reads without stopping them: it may
    see a message counted and not yet timed, never a count that goes down.
    """

    def __init__(self, agent_id: str, *, timed: bool = True) -> None:
        self.agent_id = agent_id
        self.timed = timed
        self._handled = 0
        self._buckets = [0] * (len(HANDLE_BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self._sum = 0.0
        self._other: dict[str, int] = {}
        self._lock = threading.Lock()

    def handled(self, seconds: float) -> None:
        self._handled += 1
        self._buckets[bisect.bisect_left(HANDLE_BUCKETS, seconds)] += 1
        self._sum += seconds

    def handled_batch(self, count: int) -> None:
        self._handled += count

    def count(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._other[outcome] = self._other.get(outcome, 0) + n

    def value(self, outcome: str) -> int:
        if outcome == "handled":
            return self._handled
        return self._other.get(outcome, 0)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily("garrison_messages", "Messages by outcome (handled, rejected reasons, duplicate).",
                                     labels=["agent", "outcome"])
        with self._lock:
            other = sorted(self._other.items())
        if self.timed:
            counts.add_metric([self.agent_id, "handled"], self._handled)
        for outcome, n in other:
            counts.add_metric([self.agent_id, outcome], n)
        yield counts
        if self.timed:
            per_bucket, total = list(self._buckets), self._sum
            cumulative, running = [], 0
            for bound, n in zip((*HANDLE_BUCKETS, math.inf), per_bucket, strict=True):
                running += n
                cumulative.append((floatToGoString(bound), running))
            took = HistogramMetricFamily("garrison_handle_seconds", "Time from taking a message to its state commit.",
                                         labels=["agent"])
            took.add_metric([self.agent_id], cumulative, total)
            yield took


class StatusGauges:
    """A collector: the gauges an agent's status gives, and the agent's own, read when the registry is collected.

    A failing read yields only the state ``failed`` (a collection never raises);
    an agent's gauge that fails, or whose name Prometheus refuses, is left out.
    """

    def __init__(self, agent_id: str, status: Callable[[], dict[str, Any]],
                 gauges: Callable[[], dict[str, float]] | None = None) -> None:
        self.agent_id = agent_id
        self._status = status
        self._gauges = gauges

    def describe(self) -> Iterable[Metric]:
        return []  # nothing at registration: collecting reads the agent's status

    def collect(self) -> Iterator[Metric]:
        try:
            status = self._status()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the agent did
            status = {"state": "failed"}
        yield _state_family(self.agent_id, status.get("state"))
        yield from _status_families(self.agent_id, status)
        yield from self._own()

    def _own(self) -> Iterator[Metric]:
        try:
            gauges = dict(self._gauges()) if self._gauges is not None else {}
        except Exception:  # the agent's code: a scrape must not fail because it did
            log.warning("agent %s: gauges() failed; its own gauges are left out of this collection",
                        self.agent_id, exc_info=True)
            return
        for name, value in sorted(gauges.items()):
            try:
                family = GaugeMetricFamily(name, f"{name}: a gauge of the agent's own (Agent.gauges).",
                                           labels=["agent"])
                family.add_metric([self.agent_id], float(value))
            except (TypeError, ValueError) as exc:  # not a metric name, or not a number
                log.warning("agent %s: gauge %r left out: %s", self.agent_id, name, exc)
                continue
            yield family


def _state_family(agent_id: str, state: str | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily("garrison_agent_state", "1 for the agent's lifecycle state, 0 for the others.",
                               labels=["agent", "state"])
    for value in LIFECYCLE_STATES:
        family.add_metric([agent_id, value], 1.0 if value == state else 0.0)
    return family


def _status_families(agent_id: str, status: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    def gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily | None:
        if value is None:
            return None
        family = GaugeMetricFamily(name, doc, labels=["agent"])
        family.add_metric([agent_id], float(value))
        return family

    pending = status.get("outbox_pending")
    governance = status.get("governance") or {}
    budget = governance.get("budget") or {}
    for family in (
        gauge("garrison_incarnation", "The agent's incarnation (1 at its first start).", status.get("incarnation")),
        gauge("garrison_outbox_pending", "Messages in the outbox not yet acknowledged, all recipients.",
              None if pending is None else sum(pending.values())),
        gauge("garrison_outbox_in_memory", "Outbox messages sent and not yet answered.", status.get("outbox_in_memory")),
        gauge("garrison_dead_letters", "Dead letters kept (see ref.admin.dead_letters).", status.get("dead_letters")),
        gauge("garrison_handler_running_seconds", "How long the running handler has run (0: none).",
              status.get("handler_running_for") or 0.0),
        gauge("garrison_budget_spent", "Spending against the agent's own budget in its window.", budget.get("spent")),
        gauge("garrison_budget_limit", "The agent's own budget limit in its window.", budget.get("limit")),
        gauge("garrison_actions_in_doubt", "Governed actions whose outcome is unknown (a crash during the call).",
              governance.get("in_doubt")),
    ):
        if family is not None:
            yield family
    breakers = governance.get("breakers")
    if breakers:
        family = GaugeMetricFamily("garrison_breaker_open", "1 while the breaker is open or half open.",
                                   labels=["agent", "breaker"])
        for name, state in breakers.items():
            family.add_metric([agent_id, name], 0.0 if state == "closed" else 1.0)
        yield family


def merge_expositions(texts: Iterable[str]) -> str:
    """One valid exposition of several agents' texts: each family once, with every agent's samples."""
    families: dict[str, Metric] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            kept = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            kept.samples.extend(family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry).decode()


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
