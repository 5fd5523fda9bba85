"""``PipelineDesk``: a pipeline's description and its human queue (tickets a stage gave up on).

One desk agent per pipeline, ``<pipeline>-desk``.  It knows the pipeline's stages (name, queue,
attempt budget), so anything holding the pipeline's name can find the rest (``Pipeline``, the
``garrison pipeline`` commands).  Its state holds the escalations, ``esc/<stage item id>``, each
``open`` until a person resolves it:

- ``retry``: the ticket (with ``data`` replaced when given) goes back into the stage that gave up, as
  a new item of that stage's queue keyed ``<ticket key>~h<n>`` (n counts the ticket's retries), sent
  through the desk's outbox, so it leaves if and only if the resolution commits;
- ``drop``: the ticket leaves the pipeline; the escalation keeps who dropped it and why.

Invariant: an escalation is recorded once per stage item (a redelivered ``Escalate`` answers the
record) and resolved at most once (:class:`~runtime.exceptions.PipelineError` otherwise, nothing
changed).  ``counts`` (what ``Pipeline.status`` reads: total, open, dropped, and the total by stage)
changes in the same commit as the records it counts; a desk written before it counts its records
once, at its first change or ``EscalationCounts``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from protocols import Message

from ._agent import Agent, handler
from ._stage import Escalate
from ._workqueue import Enqueue
from .exceptions import PipelineError

__all__ = ["DescribePipeline", "EscalationCounts", "Escalations", "PipelineDesk", "Resolve"]

_ESC = "esc/"


class DescribePipeline(Message, name="garrison.pipeline.describe"):
    """Reply: ``{"pipeline", "stages": [{"name", "queue", "attempts", "escalate"}, ...]}``."""


class Escalations(Message, name="garrison.pipeline.escalations"):
    """Reply: the escalations, oldest first (``open_only``: those waiting for a person)."""

    open_only: bool = True
    limit: int = Field(100, ge=1)


class EscalationCounts(Message, name="garrison.pipeline.escalation_counts"):
    """Reply: ``{"total", "open", "dropped", "by_stage": {stage: total}}``, without reading the records."""


class Resolve(Message, name="garrison.pipeline.resolve"):
    """A person's decision on an open escalation: ``retry`` it at its stage (optionally with new data) or ``drop`` it."""

    item: str
    action: Literal["retry", "drop"]
    who: str = Field(min_length=1)
    why: str = ""
    data: Any = None
    replace_data: bool = False


class PipelineDesk(Agent):
    """The pipeline ``pipeline``'s description and human queue (see the module)."""

    def __init__(self, pipeline: str, stages: list[dict[str, Any]]) -> None:
        self.pipeline = pipeline
        self.stages = {s["name"]: s for s in stages}
        self.order = [s["name"] for s in stages]
        self._open = 0  # for ``gauges`` (read from another thread): the open escalations, as of the last change

    def on_start(self) -> None:
        self._open = self.state.get("open", 0)

    @handler
    def describe(self, msg: DescribePipeline) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "stages": [self.stages[n] for n in self.order]}

    @handler
    def escalate(self, msg: Escalate) -> dict[str, Any]:
        key = _ESC + msg.item
        known = self.state.get(key)
        if known is not None:  # the same stage item again (a redelivery): one escalation
            return known
        record = {"item": msg.item, "key": msg.ticket["key"], "stage": msg.stage, "error": msg.error,
                  "attempts": msg.attempts, "ticket": msg.ticket, "state": "open", "at": time.time()}
        counts = self._counts()  # before the new record: a desk written before counts counts it below
        self.state.put(key, record)
        self._open = self.state.increment("open")
        counts["total"] += 1
        counts["by_stage"][msg.stage] = counts["by_stage"].get(msg.stage, 0) + 1
        self.state.put("counts", counts)
        return record

    def _counts(self) -> dict[str, Any]:
        """The ``counts`` record (module docstring); counted from the records if this desk has none yet."""
        counts = self.state.get("counts")
        if counts is None:
            counts = {"total": 0, "dropped": 0, "by_stage": {}}
            for _, record in self.state.scan(_ESC):
                counts["total"] += 1
                counts["dropped"] += record["state"] == "dropped"
                counts["by_stage"][record["stage"]] = counts["by_stage"].get(record["stage"], 0) + 1
        return counts

    @handler
    def escalation_counts(self, msg: EscalationCounts) -> dict[str, Any]:
        counts = self.state.get("counts")
        if counts is None:  # counted once, then kept
            counts = self._counts()
            self.state.put("counts", counts)
        return {**counts, "open": self.state.get("open", 0)}

    @handler
    def escalations(self, msg: Escalations) -> list[dict[str, Any]]:
        found = [v for _, v in self.state.scan(_ESC) if not msg.open_only or v["state"] == "open"]
        return sorted(found, key=lambda v: v["at"])[:msg.limit]

    @handler
    def resolve(self, msg: Resolve) -> dict[str, Any]:
        record = self.state.get(_ESC + msg.item)
        if record is None or record["state"] != "open":
            raise PipelineError(
                f"pipeline {self.pipeline!r} has no open escalation for item {msg.item!r}"
                + ("" if record is None else f" (it was resolved: {record['state']} by {record['resolved']['who']})"),
                pipeline=self.pipeline, item=msg.item)
        stage = self.stages[record["stage"]]
        resolved: dict[str, Any] = {"who": msg.who, "why": msg.why, "at": time.time()}
        if msg.action == "retry":
            n = self.state.increment(f"retries/{record['key']}")
            ticket = dict(record["ticket"], data=msg.data) if msg.replace_data else record["ticket"]
            resolved["as"] = f"{record['key']}~h{n}"
            # A hand-over, as a stage's (``_stage``): not bound to the deadline of the resolving ask.
            self.send(stage["queue"], Enqueue(key=resolved["as"], payload=ticket, max_attempts=stage["attempts"]),
                      inherit_deadline=False)
        counts = self._counts()  # before the record changes: one counted from the records sees it open
        counts["dropped"] += msg.action == "drop"
        record.update(state="retried" if msg.action == "retry" else "dropped", resolved=resolved)
        self.state.put(_ESC + msg.item, record)
        self.state.put("counts", counts)
        self._open = self.state.increment("open", -1)
        return record

    def gauges(self) -> dict[str, float]:
        return {"garrison_pipeline_escalations_open": float(self._open)}
