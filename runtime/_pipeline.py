"""``Pipeline``: a driver's (or an operator's) handle on a running pipeline, by its name.

Everything it answers is read from the pipeline's agents, never remembered here: the stages from
the desk (``<name>-desk``), the work from each stage's queue.  ``status`` is what ``garrison pipeline
status`` shows: per stage, its queue's pending, leased, done and dead items and the oldest wait;
end to end, tickets submitted, completed, escalated and in flight, and the latency (submit to last
stage done) over the newest completions; and the tickets in flight (the first ``tickets``) with the
stage each is at, its state there, its attempts and its worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._pipeline_desk import DescribePipeline, EscalationCounts, Escalations, Resolve
from ._stage import ticket
from ._workqueue import Ack, EnqueueMany, GetItem, Items, NewItem, QueueStats, Results
from .exceptions import PipelineError, UnknownItem

__all__ = ["Pipeline", "latency"]

#: Completions ``status`` reads for its latency figures (the newest not yet acked: acked ones have no ticket left).
LATENCY_WINDOW = 1000


def latency(results: Iterable[dict[str, Any]]) -> dict[str, float | None]:
    """p50, p95 and max seconds from submit to done, over the last stage's results (pure)."""
    times = sorted(r["finished_at"] - r["result"]["entered_at"] for r in results if "entered_at" in (r["result"] or {}))
    if not times:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return {"count": len(times), "p50": pick(0.50), "p95": pick(0.95), "max": times[-1]}


class Pipeline:
    """The pipeline ``name`` (started by ``supervisors.start_pipeline``); ``lookup`` finds agents (``System.lookup``)."""

    def __init__(self, name: str, lookup: Callable[[str], Any], *, timeout: float = 30.0, root: Any = None) -> None:
        self.name = name
        self._lookup = lookup
        self.timeout = timeout
        #: The pipeline's root supervisor (a ``SupervisorRef``) when this handle started it, else None.
        #: Held here because Ray ends a supervisor that is not detached once its last handle is gone.
        self.root = root
        self._stages: list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r})"

    def stop(self) -> None:
        """Stop the pipeline (its root supervisor stops every agent of it); only for the handle that started it."""
        if self.root is None:
            raise PipelineError(f"this handle on pipeline {self.name!r} did not start it: stop its root supervisor "
                                "(supervisors.SupervisorRef.lookup(name).stop())", pipeline=self.name)
        self.root.stop()

    @property
    def desk(self) -> Any:
        return self._lookup(f"{self.name}-desk")

    @property
    def stages(self) -> list[dict[str, Any]]:
        """``[{"name", "queue", "attempts", "escalate"}, ...]`` in order (asked of the desk once)."""
        if self._stages is None:
            self._stages = self.desk.ask(DescribePipeline(), timeout=self.timeout)["stages"]
        return self._stages

    def _queue(self, stage: dict[str, Any]) -> Any:
        return self._lookup(stage["queue"])

    def submit(self, key: str, data: Any, *, priority: int = 0) -> dict[str, Any]:
        """Put a ticket into the first stage; a key already submitted is one ticket (``duplicate: True``)."""
        return self.submit_many([(key, data)], priority=priority)[0]

    def submit_many(self, tickets: Iterable[tuple[str, Any]], *, priority: int = 0) -> list[dict[str, Any]]:
        """Put tickets ``(key, data)`` into the first stage in one call; one answer per ticket, in order."""
        first = self.stages[0]
        now = time.time()
        items = [NewItem(key=key, payload=ticket(key, data, now), priority=priority, max_attempts=first["attempts"])
                 for key, data in tickets]
        return self._queue(first).ask(EnqueueMany(items=items), timeout=self.timeout) if items else []

    def results(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """Finished tickets in completion order from a cursor: ``{"items", "cursor"}`` (the last queue's results).

        Each item's ``result`` is the ticket: ``key``, ``data`` as the last stage left it, ``trail``.
        Escalated tickets retried at a stage finish under ``<key>~h<n>``; the ticket's ``key`` is its own.
        Tickets the last stage escalated are there too, with ``{"escalated": <desk>}`` as result.
        """
        return self._queue(self.stages[-1]).ask(Results(after=after, limit=limit), timeout=self.timeout)

    def ack(self, upto: int) -> dict[str, Any]:
        """Drop the finished tickets up to cursor ``upto`` (a ``results`` cursor), once read: they stay
        counted as completed, and ``results`` and ``finished`` start after them.  ``{"acked", "dropped"}``."""
        return self._queue(self.stages[-1]).ask(Ack(upto=upto), timeout=self.timeout)

    def finished(self, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every finished ticket still kept (not acknowledged), oldest first; the last stage's escalations left out."""
        cursor = 0
        while True:
            got = self.results(cursor, page)
            yield from (r for r in got["items"] if "escalated" not in (r["result"] or {}))
            if not got["items"]:
                return
            cursor = got["cursor"]

    def escalations(self, *, open_only: bool = True, limit: int = 100) -> list[dict[str, Any]]:
        """Tickets a stage gave up on, for people; see ``runtime._pipeline_desk``."""
        return self.desk.ask(Escalations(open_only=open_only, limit=limit), timeout=self.timeout)

    def resolve(self, item: str, action: str, *, who: str, why: str = "", data: Any = None,
                replace_data: bool = False) -> dict[str, Any]:
        """Decide an open escalation: ``retry`` it at its stage (with ``data`` when ``replace_data``) or ``drop`` it."""
        return self.desk.ask(Resolve(item=item, action=action, who=who, why=why, data=data,
                                     replace_data=replace_data), timeout=self.timeout)

    def where(self, key: str) -> dict[str, Any]:
        """Where ticket ``key`` is: ``{"key", "stage", "state", "attempts", "stages": [...]}``.

        ``stage`` is the furthest stage whose queue knows the ticket (with that item's ``state``);
        ``stages`` lists each stage's item, or None where the ticket has not been.
        """
        seen = []
        for stage in self.stages:
            try:
                item = self._queue(stage).ask(GetItem(item=key), timeout=self.timeout)
            except UnknownItem:
                item = None
            seen.append({"stage": stage["name"], **({k: item.get(k) for k in ("state", "attempts", "reason")}
                                                   if item else {"state": None})})
        reached = [s for s in seen if s["state"] is not None]
        if not reached:
            raise PipelineError(f"pipeline {self.name!r} has no ticket {key!r}", pipeline=self.name, item=key)
        last = reached[-1]
        return {"key": key, "stage": last["stage"], "state": last["state"], "stages": seen}

    def in_flight(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` tickets being worked on or waiting, each at its furthest stage, the furthest first.

        Each ``{"key", "stage", "state", "attempts", "worker", "in_state"}`` (``in_state``: seconds).
        A ticket's item is listed under its queue's id (a retry's ``<key>~h<n>``).
        """
        found: dict[str, dict[str, Any]] = {}
        for stage in reversed(self.stages):
            for state in ("leased", "pending"):
                page = self._queue(stage).ask(Items(state=state, limit=limit), timeout=self.timeout)["items"]
                for item in page:
                    found.setdefault(item["id"], {"key": item["id"], "stage": stage["name"], "state": state,
                                                  "attempts": item["attempts"], "worker": item.get("worker"),
                                                  "in_state": item.get("in_state")})
                if len(found) >= limit:
                    return list(found.values())[:limit]
        return list(found.values())

    def status(self, *, tickets: int = 20) -> dict[str, Any]:
        """The pipeline's progress (see the module docstring); ``tickets``: how many in-flight ones to list."""
        stages = []
        for stage in self.stages:
            stats = self._queue(stage).ask(QueueStats(), timeout=self.timeout)
            stages.append({"stage": stage["name"], "queue": stage["queue"],
                           **{s: stats[s]["count"] for s in ("pending", "leased", "done", "dead")},
                           "oldest_wait": stats["pending"]["oldest_age"]})
        escalated = self.desk.ask(EscalationCounts(), timeout=self.timeout)
        # The last stage's queue counts the tickets it escalated as done too (their item there is finished).
        done = stages[-1]["done"] - escalated["by_stage"].get(self.stages[-1]["name"], 0)
        recent = self.results(max(0, stages[-1]["done"] - LATENCY_WINDOW), LATENCY_WINDOW)["items"]
        first = stages[0]
        submitted = first["pending"] + first["leased"] + first["done"] + first["dead"]
        dead = sum(s["dead"] for s in stages)
        waiting, dropped = escalated["open"], escalated["dropped"]
        return {
            "pipeline": self.name,
            "submitted": submitted,
            "completed": done,
            # Counted by ticket, not by item: between a stage's hand-over and its report, a ticket's item is
            # still leased at one stage while already pending at the next.
            "in_flight": max(0, submitted - done - dead - waiting - dropped),
            "dead": dead,
            "escalated_open": waiting,
            "escalated": escalated["total"],
            "latency": latency(recent),
            "stages": stages,
            "tickets": self.in_flight(tickets) if tickets else [],
        }
