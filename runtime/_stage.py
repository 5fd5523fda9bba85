"""``Stage``: one step of a pipeline, a ``QueueWorker`` whose result goes on to the next stage's queue.

A pipeline (``supervisors.start_pipeline``) is a chain of work queues, one per stage, each pulled by
a pool of that stage's :class:`Stage` agents.  What travels is a *ticket*, a plain dict::

    {"key": <the ticket's key>, "data": <what the stages work on>, "entered_at": <submit time>,
     "trail": [{"stage", "worker", "attempt", "at"}, ...]}

A stage's :meth:`Stage.handle` turns the ticket's ``data`` into the next ``data``.  The hand-over is
part of the item's ``Process`` handler: the ``Enqueue`` to the next stage's queue goes through this
agent's durable outbox (``self.send``), so it leaves if and only if the item's done-record commits,
and is retried until the next queue has it.  The next queue's item has the same key, so a repeated
hand-over (a redelivery) is one item there.  Invariant: a ticket is live work (pending or leased) at
one stage, or at two adjacent ones between its hand-over and the report of the stage it left (whose
item is then done once reported, or comes back and is answered from its done-record, never handed
over again); or done at the last stage, or at the desk.

Failure, by the stage's policy: ``handle`` raising fails the attempt and the stage's queue retries
the item after its backoff (``RetryPolicy``); on the stage's last attempt the ticket goes to the
pipeline's desk when the stage routes to people (``escalate=True``: the desk is asked, and has the
ticket before its item is completed in this stage's queue as escalated), else it is dead in the
stage's queue, for an operator (a desk that does not answer fails the attempt: dead, too).  A worker killed mid-item leaves its lease to expire: the item is
tried again by another worker (an expired lease counts as an attempt, and an item whose last attempt
was lost that way is dead, not escalated: no code of the stage ran to the end to say so).

``handle`` should keep what it knows about the ticket in the ticket: changes it makes to
``self.state`` before raising on the escalating attempt commit with the escalation.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from protocols import Message

from ._queueworker import Process, QueueWorker
from ._workqueue import Enqueue

__all__ = ["Escalate", "Stage", "ticket"]


class Escalate(Message, name="garrison.pipeline.escalate"):
    """A ticket its stage gave up on, for a person (the pipeline's desk records it once per item)."""

    item: str  # the stage queue's item id (the ticket's key, or a retry's key)
    stage: str
    error: str
    attempts: int
    ticket: dict[str, Any]


def ticket(key: str, data: Any, now: float) -> dict[str, Any]:
    """A new ticket (see the module docstring) entering the pipeline at ``now``."""
    return {"key": key, "data": data, "entered_at": now, "trail": []}


class Stage(QueueWorker):
    """One stage of a pipeline: implement ``handle(data) -> data`` (sync or ``async``); see the module.

    Spawned by the pipeline, with ``stage`` (its name), ``queue`` (its stage's queue), ``next`` (the
    next stage's queue, None for the last), ``next_attempts`` (that stage's attempt budget), ``desk``
    and ``attempts`` (this stage's budget) and ``escalate`` (route to people on the last attempt).
    """

    def __init__(self, queue: str, stage: str, next: str | None = None, next_attempts: int | None = None,
                 desk: str | None = None, attempts: int = 5, escalate: bool = True, **worker: Any) -> None:
        super().__init__(queue, **worker)
        self.stage = stage
        self.next = next
        self.next_attempts = next_attempts
        self.desk = desk
        self.attempts = attempts
        self.escalate = escalate

    def handle(self, data: Any) -> Any:
        """The stage's work on one ticket's data; its return value is the next stage's data."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle(data)")

    async def run_item(self, msg: Process) -> Any:
        item = msg.payload
        try:
            data = self.handle(item["data"])
            if inspect.isawaitable(data):
                data = await data
        except Exception as exc:
            if not (self.escalate and self.desk and msg.attempt >= self.attempts):
                raise  # the queue retries it, or it is dead after its last attempt
            # Asked, not sent: the desk holds the ticket before this item is done here, so a pipeline
            # never looks finished with an escalation still on its way (a retry asks again: one record).
            await self.lookup(self.desk).ask_async(Escalate(item=msg.item, stage=self.stage, attempts=msg.attempt,
                                                            error=f"{type(exc).__name__}: {exc}", ticket=item))
            return {"escalated": self.desk}
        moved = {**item, "data": data, "trail": [*item["trail"], {"stage": self.stage, "worker": self.agent_id,
                                                                   "attempt": msg.attempt, "at": time.time()}]}
        if self.next is None:
            return moved  # the last stage: the ticket is the pipeline's result
        # Not bound by this item's Process deadline (its lease): the ticket must reach the next queue
        # however long that takes, or it would arrive expired, a dead letter of that queue's.
        self.send(self.next, Enqueue(key=msg.item, payload=moved, max_attempts=self.next_attempts),
                  inherit_deadline=False)
        return {"to": self.next}
