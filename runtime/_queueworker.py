"""``QueueWorker``: an agent that pulls items from a ``WorkQueue`` and does them, once each.

A subclass implements ``work(payload) -> result`` (it may use ``self.state`` and
``self.send``; an ``async def work`` may also ``await self.act(...)``).  The agent's own thread
claims a batch (``Claim``, leased for ``lease_seconds``), asks the agent itself
a :class:`Process` for each item -- so each item is done inside a handler, its
state changes committed atomically with a ``queue-done/<item id>`` record of
its result -- and reports the batch's results with one ``CompleteMany``.  Past half
its lease a batch is extended (one ``ExtendMany``, the items done and not yet reported too), so a
slow batch keeps its items instead of losing them, and an attempt each, to an expiry.  A
``work`` that raises gives the item up (``Fail``, retried by the queue's
policy); a worker that is stopped or killed mid-batch leaves its leases to
expire, and the queue hands the items to another worker.

Effectively once: an item whose lease expired after its ``Process`` committed
(the worker died before reporting) comes back with a new token; the ``Process``
handler then finds ``queue-done/<id>`` and answers the recorded result without
calling ``work`` again, so the item's effects on this agent's state happen once.
A ``work`` with effects outside the agent must make them idempotent by item id
(or use a governed action with its idempotency key).  The records are dropped
once the queue has the result (``Forget``).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any

from protocols import Message, UnknownMessageType

from ._agent import Agent, handler
from ._workqueue import Claim, CompleteMany, Completion, Extend, ExtendMany, Fail, Held
from .exceptions import GarrisonError, HandlerError, LeaseLost, NoHandler

__all__ = ["Forget", "Process", "QueueWorker"]

log = logging.getLogger("garrison.queue")
_DONE = "queue-done/"
#: Longest wait between claims while the queue does not answer (seconds).
MAX_BACKOFF = 5.0


class Process(Message, name="garrison.queue.process"):
    """Do one claimed item (the worker asks itself this, from its pulling thread)."""

    item: str
    token: int
    payload: Any = None
    #: Its attempt since it was enqueued or last replayed (1 for the first claim); the token goes on
    #: counting across replays, this does not.
    attempt: int = 1


class Forget(Message, name="garrison.queue.forget"):
    """Drop the done-records of items the queue has the results of."""

    items: list[str]


class QueueWorker(Agent):
    """Pulls from the ``WorkQueue`` agent ``queue`` (spawn with ``init={"queue": "<its id>"}``); see the module."""

    def __init__(self, queue: str, batch: int = 10, lease_seconds: float = 30.0, idle_wait: float = 0.2) -> None:
        self.queue_id = queue
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.idle_wait = idle_wait
        self._stopping = threading.Event()
        #: Items done by this worker, and leases it extended, counted by the pulling thread (for ``gauges``).
        self._done = 0
        self._extended = 0

    def work(self, payload: Any) -> Any:
        """Do one item; its return value is the item's result (msgpack-able)."""
        raise NotImplementedError(f"{type(self).__name__} must implement work(payload)")

    def on_start(self) -> None:
        threading.Thread(target=self._pull, name=f"garrison-worker-{self.agent_id}", daemon=True).start()

    def on_stop(self) -> None:
        self._stopping.set()

    def gauges(self) -> dict[str, float]:
        return {"garrison_worker_items_done": self._done, "garrison_worker_leases_extended": self._extended}

    async def run_item(self, msg: Process) -> Any:
        """Do one claimed item (its id, claim ``msg.token``, attempt ``msg.attempt``, payload): ``work(payload)``.

        Runs inside the ``Process`` handler, so it may ``self.send`` (committed with the item's
        done-record) and, when ``work`` is a coroutine function, ``await self.act(...)``.
        """
        result = self.work(msg.payload)
        return await result if inspect.isawaitable(result) else result

    @handler
    async def process(self, msg: Process) -> Any:
        key = _DONE + msg.item
        if key in self.state:  # done by an earlier attempt whose report was lost: not again
            return self.state.get(key)
        result = await self.run_item(msg)
        self.state.put(key, result)
        return result

    @handler
    def forget(self, msg: Forget) -> int:
        return sum(self.state.delete(_DONE + item) for item in msg.items)

    def _pull(self) -> None:
        """Claim, do, report, until stopped.  Every failure is the queue's to retry: nothing is lost here."""
        me, queue = self.lookup(self.agent_id), self.lookup(self.queue_id)
        failures = 0
        while not self._stopping.is_set():
            try:
                items = queue.ask(Claim(worker=self.agent_id, limit=self.batch, lease_seconds=self.lease_seconds),
                                  timeout=self.lease_seconds)
                failures = 0
            except GarrisonError as exc:  # the queue restarting (or missing), this agent stopping: look again, later
                failures += 1
                log.info("worker %s: claim from %s failed (%d in a row): %s", self.agent_id, self.queue_id,
                         failures, exc)
                self._stopping.wait(min(MAX_BACKOFF, self.idle_wait * 2 ** min(failures, 16)))
                continue
            if not items:
                self._stopping.wait(self.idle_wait)
                continue
            self._do(me, queue, items)

    def _do(self, me: Any, queue: Any, items: list[dict[str, Any]]) -> None:
        done: list[Completion] = []
        lost: set[str] = set()  # leases found lost when extending: not done here
        renew_at = time.monotonic() + self.lease_seconds / 2
        try:
            for i, item in enumerate(items):
                if self._stopping.is_set():
                    break  # the rest of the batch: their leases expire, another worker takes them
                if time.monotonic() >= renew_at:
                    held = [(c.item, c.token) for c in done] + [(x["id"], x["token"]) for x in items[i:]]
                    lost |= self._extend(queue, held)
                    renew_at = time.monotonic() + self.lease_seconds / 2
                if item["id"] in lost:
                    continue
                try:
                    result = me.ask(Process(item=item["id"], token=item["token"], payload=item["payload"],
                                            attempt=item.get("attempt", item["token"])),
                                    timeout=self.lease_seconds)
                except HandlerError as exc:
                    queue.ask(Fail(item=item["id"], token=item["token"], reason=str(exc)), timeout=self.lease_seconds)
                    continue
                done.append(Completion(item=item["id"], token=item["token"], result=result))
            if done:
                queue.ask(CompleteMany(items=done), timeout=self.lease_seconds)
                self._done += len(done)
                me.ask(Forget(items=[c.item for c in done]), timeout=self.lease_seconds)
        except GarrisonError as exc:  # stopping, or the queue gone for now: the leases expire, nothing lost
            log.info("worker %s: batch cut short: %s", self.agent_id, exc)

    def _extend(self, queue: Any, held: list[tuple[str, int]]) -> set[str]:
        """Extend the leases of ``held`` (id, token) by ``lease_seconds`` in one ``ExtendMany``; the ids
        whose lease was lost.  A queue that does not know ``ExtendMany`` (an older Garrison, mid-upgrade)
        is asked one ``Extend`` per item instead."""
        try:
            outcomes = queue.ask(ExtendMany(items=[Held(item=i, token=t) for i, t in held],
                                            lease_seconds=self.lease_seconds), timeout=self.lease_seconds)
        except (UnknownMessageType, NoHandler):
            outcomes = [self._extend_one(queue, item_id, token) for item_id, token in held]
        lost = {o["id"] for o in outcomes if o["status"] != "extended"}
        self._extended += len(held) - len(lost)
        return lost

    def _extend_one(self, queue: Any, item_id: str, token: int) -> dict[str, Any]:
        try:
            queue.ask(Extend(item=item_id, token=token, lease_seconds=self.lease_seconds), timeout=self.lease_seconds)
        except LeaseLost:
            return {"id": item_id, "status": "lease_lost"}
        return {"id": item_id, "status": "extended"}
