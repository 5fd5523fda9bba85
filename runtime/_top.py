"""``garrison top``: one row per agent, from two looks at it a moment apart.

A :class:`Sample` is one look at an agent: its status and the counters of its
metrics (messages by outcome, the handling-time histogram).  :func:`row` turns
the previous sample and the current one into the table's row: the message
rate and the handling latency are over the interval between the two (a rate
needs two looks; the first row of an agent shows ``None`` there), the depths
and error counts are the current ones.  Counters restart with each
incarnation: across a restart the interval's figures are left out rather than
shown negative.

Sampling is the only part that reaches a cluster (:func:`take`, and :func:`take_all` for every
agent at once, so one slow or hung agent costs a refresh its own timeout, not everyone's); the
rest are pure functions of samples, tested without one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Sample", "agent_refs", "parse_metrics", "quantile", "row", "take", "take_all", "unreachable"]

#: Agents sampled at once by :func:`take_all` (each sample is two asks that mostly wait).
SAMPLERS = 16

#: Outcomes that are not failures: the message took effect, or had already (a redelivery).
_FINE = frozenset({"handled", "duplicate"})


@dataclass(frozen=True)
class Sample:
    """One look at an agent: ``at`` (monotonic seconds), its status, and its message counters."""

    at: float
    status: dict[str, Any]
    outcomes: dict[str, float] = field(default_factory=dict)  # garrison_messages_total by outcome
    handle_count: float = 0.0  # garrison_handle_seconds_count
    handle_sum: float = 0.0  # garrison_handle_seconds_sum
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count), ascending
    background_errors: float = 0.0


def parse_metrics(text: str) -> dict[str, Any]:
    """The counters ``top`` needs from an agent's exposition text (``ref.admin.metrics()``)."""
    out: dict[str, Any] = {"outcomes": {}, "handle_count": 0.0, "handle_sum": 0.0, "buckets": [],
                           "background_errors": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "garrison_messages_total":
                out["outcomes"][s.labels["outcome"]] = s.value
            elif s.name == "garrison_handle_seconds_count":
                out["handle_count"] = s.value
            elif s.name == "garrison_handle_seconds_sum":
                out["handle_sum"] = s.value
            elif s.name == "garrison_handle_seconds_bucket":
                out["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name == "garrison_background_errors_total":
                out["background_errors"] = s.value
    out["buckets"] = tuple(sorted(out["buckets"]))
    return out


def take(ref: Any, *, timeout: float = 5.0, clock: Any = time.monotonic) -> Sample:
    """Look at the agent behind ``ref`` (an AgentRef) now: its status and its metrics."""
    status = ref.admin.status(timeout=timeout)
    return Sample(at=clock(), status=status, **parse_metrics(ref.admin.metrics()))


def take_all(refs: dict[str, Any], take: Callable[[Any], Sample] = take) -> dict[str, Sample | Exception]:
    """A sample of each agent in ``refs``, :data:`SAMPLERS` at a time, by id; a Garrison error that an
    agent's sampling raised stands in its place (anything else is raised)."""
    from .exceptions import GarrisonError

    def one(ref: Any) -> Sample | Exception:
        try:
            return take(ref)
        except GarrisonError as exc:
            return exc

    if not refs:
        return {}
    with ThreadPoolExecutor(max_workers=min(SAMPLERS, len(refs)), thread_name_prefix="garrison-top") as pool:
        return dict(zip(refs, pool.map(one, refs.values()), strict=True))


def quantile(q: float, before: tuple[tuple[float, float], ...], now: tuple[tuple[float, float], ...]) -> float | None:
    """The ``q`` quantile (seconds) of what was observed between two cumulative histograms, or None.

    Linear within the bucket it falls in, as Prometheus' ``histogram_quantile``;
    a quantile in the last (unbounded) bucket is that bucket's lower bound.
    """
    start = dict(before)
    counts = [(bound, n - start.get(bound, 0.0)) for bound, n in now]
    if not counts or counts[-1][1] <= 0:
        return None
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, cumulative
    return lower


def row(agent_id: str, before: Sample | None, now: Sample) -> dict[str, Any]:
    """The table row for ``agent_id``: state, rate, latency, depths, errors (see the module)."""
    status = now.status
    comparable = (before is not None and before.status.get("incarnation") == status.get("incarnation")
                  and now.at > before.at)
    rate = p50 = p99 = mean = None
    if comparable:
        assert before is not None
        took = now.handle_count - before.handle_count
        rate = (now.outcomes.get("handled", 0.0) - before.outcomes.get("handled", 0.0)) / (now.at - before.at)
        if took > 0:
            mean = (now.handle_sum - before.handle_sum) / took
            p50 = quantile(0.5, before.buckets, now.buckets)
            p99 = quantile(0.99, before.buckets, now.buckets)
    failed = sum(n for outcome, n in now.outcomes.items() if outcome not in _FINE)
    return {
        "agent": agent_id,
        "state": status.get("state"),
        "incarnation": status.get("incarnation"),
        "handled": int(now.outcomes.get("handled", 0)),
        "rate_per_s": None if rate is None else round(rate, 1),
        "mean_ms": _ms(mean),
        "p50_ms": _ms(p50),
        "p99_ms": _ms(p99),
        "outbox": _total(status.get("outbox_pending")),
        "dead_letters": status.get("dead_letters"),
        "errors": int(failed + now.background_errors),
        "degraded": status.get("degraded") is not None,
    }


def _total(pending: Any) -> int | None:
    """The outbox's depth: ``outbox_pending`` is per recipient."""
    if isinstance(pending, dict):
        return int(sum(pending.values()))
    return pending


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def agent_refs(system: Any) -> dict[str, Any]:
    """The agents among ``system``'s namespace's named actors, by id (supervisors and other actors left out)."""
    from .exceptions import GarrisonError

    out = {}
    for agent_id in system.agents():
        try:
            ref = system.lookup(agent_id)
        except GarrisonError:
            continue  # gone between the listing and the lookup
        if hasattr(ref.route.handle, "inspect"):  # an agent host; a supervisor has no such method
            out[agent_id] = ref
    return out


def unreachable(agent_id: str, why: str) -> dict[str, Any]:
    """The row of an agent that did not answer."""
    return {"agent": agent_id, "state": "unreachable", "error": why}
