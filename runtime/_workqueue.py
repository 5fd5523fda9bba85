"""``WorkQueue``: a durable work queue as a Garrison agent, and its messages.

The queue's rules live in :mod:`._queue_logic` (a plain class over a key-value store and a clock);
this module maps each message to one of its operations over the agent's ``self.state`` at
``time.time()``.  So the queue's state is the agent's LMDB working state: each message's changes
commit atomically with it, survive a SIGKILL, are journaled and checkpointed like any agent's, and
the agent can be supervised.  The agent handles one message at a time, so two claims never see the
same ready item: a claim race has one winner by construction.

Asks are effectively-once by default: a driver's ask retried across a restart of the queue (same
message id) gets the reply of the first handling, so a ``Claim`` whose reply was lost in a crash
does not lease items nobody knows about.

Replies are plain data (dicts and lists; see each message).  Refusals are typed errors raised to
the asker: :class:`~runtime.LeaseLost` (the token does not hold the item's lease),
:class:`~runtime.UnknownItem`, and :class:`~runtime.QueueError` itself for a replay of an item that
is not dead.  The batch forms (``CompleteMany``, ``FailMany``) answer per item instead of raising.

The retry policy is :attr:`WorkQueue.policy` (a class attribute; subclass to change it), or the
``policy`` keyword the agent is spawned with: ``system.spawn(WorkQueue, "jobs", init={"policy":
{"base": 0.5, "max_attempts": 3}})``.  Session affinity's window is :attr:`WorkQueue.affinity_seconds`,
or the ``affinity_seconds`` keyword (``init={"affinity_seconds": 60}``); whether results are kept
until acked, ``keep_results``; how long a done item is remembered, ``forget_after`` (the same way).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols import Message

from ._agent import Agent, handler
from ._queue_logic import PRIORITY_RANGE, QueueLogic, RetryPolicy, checked_forget_after

# Public through ``runtime.queue`` (the messages) and ``runtime`` (``WorkQueue``).


class NewItem(BaseModel):
    """One item of an :class:`EnqueueMany`: the fields of :class:`Enqueue`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    payload: Any = None
    priority: int = Field(0, ge=-PRIORITY_RANGE, le=PRIORITY_RANGE)
    max_attempts: int | None = Field(None, ge=1)
    session: str | None = Field(None, min_length=1)


class Enqueue(Message, name="garrison.queue.enqueue"):
    """Add an item under idempotency ``key`` (its id).  Reply: ``{"id", "duplicate", "state", "attempts"}``;
    a key already in the queue changes nothing (``duplicate: True``, the existing item's state)."""

    key: str = Field(min_length=1)
    payload: Any = None
    #: Higher is claimed first.
    priority: int = Field(0, ge=-PRIORITY_RANGE, le=PRIORITY_RANGE)
    #: Claims before the item is dead (default: the queue's ``RetryPolicy.max_attempts``).
    max_attempts: int | None = Field(None, ge=1)
    #: Items of one session go to one worker while it lives (session affinity); a ``QueueSet`` routes by it.
    session: str | None = Field(None, min_length=1)


class EnqueueMany(Message, name="garrison.queue.enqueue_many"):
    """Add several items in one message.  Reply: one :class:`Enqueue` answer per item, in order."""

    items: list[NewItem]


class Claim(Message, name="garrison.queue.claim"):
    """Lease up to ``limit`` items to ``worker`` for ``lease_seconds``.  Reply: a list (maybe empty) of
    ``{"id", "token", "attempt", "lease_until", "payload", "priority"}`` (and ``session`` for an item of one):
    the sessions bound to ``worker`` first, then highest priority first, then oldest."""

    worker: str
    limit: int = Field(1, ge=1)
    lease_seconds: float = Field(30.0, gt=0)


class Extend(Message, name="garrison.queue.extend"):
    """Move a held lease's end to now + ``lease_seconds``.  Reply: ``{"id", "token", "lease_until"}``;
    raises ``LeaseLost`` if the token no longer holds the lease."""

    item: str
    token: int
    lease_seconds: float = Field(30.0, gt=0)


class Complete(Message, name="garrison.queue.complete"):
    """Record the item's result.  Reply: ``{"id", "status", "seq"}``, status ``completed``, or
    ``already_completed`` for a repeat with the token that completed it (the first result is kept);
    raises ``LeaseLost`` for any other token that does not hold the lease, ``UnknownItem``."""

    item: str
    token: int
    result: Any = None


class Held(BaseModel):
    """One lease of an :class:`ExtendMany`: the item and the token that holds it."""

    model_config = ConfigDict(extra="forbid")

    item: str
    token: int


class ExtendMany(Message, name="garrison.queue.extend_many"):
    """Extend several held leases to now + ``lease_seconds``, each on its own.  Reply: one outcome per
    item, in order: ``{"id", "status"}`` with status ``extended`` (and ``token``, ``lease_until``),
    ``lease_lost`` (``error``, ``current_token``, ``state``: that item unchanged) or ``unknown``."""

    items: list[Held]
    lease_seconds: float = Field(30.0, gt=0)


class Completion(BaseModel):
    """One completion of a :class:`CompleteMany`."""

    model_config = ConfigDict(extra="forbid")

    item: str
    token: int
    result: Any = None
    #: The item's session, if it has one: where a ``QueueSet`` routes the completion (a queue ignores it).
    session: str | None = None


class CompleteMany(Message, name="garrison.queue.complete_many"):
    """Complete several items, each on its own.  Reply: one outcome per item, in order:
    ``{"id", "status"}`` with status ``completed``, ``already_completed``, ``lease_lost`` or ``unknown``."""

    items: list[Completion]


class Fail(Message, name="garrison.queue.fail"):
    """Give a leased item up.  ``retry``: back to pending after the policy's backoff, unless out of
    attempts; otherwise (or ``retry=False``) dead.  Reply: ``{"id", "state", "attempts", "retry_at"}``."""

    item: str
    token: int
    reason: str = ""
    retry: bool = True


class Failure(BaseModel):
    """One failure of a :class:`FailMany`: the fields of :class:`Fail`."""

    model_config = ConfigDict(extra="forbid")

    item: str
    token: int
    reason: str = ""
    retry: bool = True
    #: The item's session, if it has one: where a ``QueueSet`` routes the failure (a queue ignores it).
    session: str | None = None


class FailMany(Message, name="garrison.queue.fail_many"):
    """Fail several items, each on its own (its token, reason, retry).  Reply: one outcome per item, in
    order: ``{"id", "status"}`` with status ``failed`` (and ``state``, ``attempts``, ``retry_at`` as
    :class:`Fail`'s), ``lease_lost`` (``error``, ``current_token``, ``state``: that item unchanged)
    or ``unknown``."""

    items: list[Failure]


class Replay(Message, name="garrison.queue.replay"):
    """An operator's: move dead items back to pending, attempts from 0 (recorded in the item's ``replays``).

    Either ``items`` (by id: each must be dead, else ``UnknownItem`` or ``QueueError`` and nothing
    changes) or ``all`` (the ``limit`` that died first).  ``who`` is recorded.  Reply:
    ``{"replayed": [{"id", "attempts", "replay_count"}, ...], "dead"}`` (``dead``: how many are left).
    """

    items: list[str] = Field(default_factory=list)
    all: bool = False
    limit: int = Field(100, ge=1)
    who: str = ""

    @model_validator(mode="after")
    def _one_choice(self) -> Replay:
        if bool(self.items) == self.all:
            raise ValueError("replay either items (by id) or all dead items, not both nor neither")
        return self


class Items(Message, name="garrison.queue.items"):
    """A page of the queue's items, of one ``state`` or (None) of all, from cursor ``after`` (a listing's
    ``cursor``).  Reply: ``{"items", "cursor", "more"}``, each item ``{"id", "state", "priority",
    "attempts", "token", "session", "worker", "age", "in_state", "lease_left", "retry_in", "reason",
    "replays"}`` (ages in seconds); pass ``cursor`` back as ``after`` for the next page."""

    state: Literal["pending", "leased", "dead", "done"] | None = None
    after: str | None = None
    limit: int = Field(100, ge=1, le=10_000)


class Results(Message, name="garrison.queue.results"):
    """Completed items after cursor ``after``, in completion order.  Reply: ``{"items", "cursor"}``,
    each item ``{"id", "seq", "result", "attempts", "finished_at"}``; pass ``cursor`` back for more."""

    after: int = Field(0, ge=0)
    limit: int = Field(100, ge=1)


class Ack(Message, name="garrison.queue.ack"):
    """Drop the results up to cursor ``upto`` (the items stay done).  Reply: ``{"acked", "dropped"}``."""

    upto: int = Field(ge=0)


class QueueStats(Message, name="garrison.queue.stats"):
    """Reply: per state (``pending``, ``leased``, ``done``, ``dead``) ``{"count", "oldest_age"}``,
    and ``depth`` (pending + leased)."""


class GetItem(Message, name="garrison.queue.item"):
    """Reply: the item's stored record (``state``, ``attempts``, ``result``, ``reason``...); ``UnknownItem``."""

    item: str


class WorkQueue(Agent):
    """A durable work queue (see the module docstring and :mod:`runtime._queue_logic` for the semantics)."""

    #: The retry policy of every queue of this class, unless spawned with ``init={"policy": {...}}``.
    policy: ClassVar[RetryPolicy] = RetryPolicy()
    #: Seconds a session stays bound to the worker that last claimed or extended one of its items
    #: (beyond its leases), unless spawned with ``init={"affinity_seconds": ...}``.
    affinity_seconds: ClassVar[float] = 30.0
    #: Whether completions keep their results (and payloads) until acked, unless spawned with
    #: ``init={"keep_results": False}``: a queue nobody reads results from (a pipeline's inner
    #: stages) drops them as each item completes, so its done items keep only their records.
    keep_results: ClassVar[bool] = True
    #: Seconds after which a done item, its result acked, is forgotten (its key can be enqueued again
    #: as a new item), unless spawned with ``init={"forget_after": ...}``; None: kept for ever.
    forget_after: ClassVar[float | None] = None

    def __init__(self, policy: dict[str, Any] | RetryPolicy | None = None,
                 affinity_seconds: float | None = None, keep_results: bool | None = None,
                 forget_after: float | None = None) -> None:
        if isinstance(policy, dict):
            policy = RetryPolicy(**policy)
        self.retry_policy = policy or type(self).policy
        self.affinity = type(self).affinity_seconds if affinity_seconds is None else affinity_seconds
        if self.affinity < 0:
            raise ValueError("affinity_seconds cannot be negative")
        self.keeps_results = type(self).keep_results if keep_results is None else bool(keep_results)
        self.forgets_after = checked_forget_after(type(self).forget_after if forget_after is None else forget_after)

    def _logic(self) -> QueueLogic:
        return QueueLogic(self.state, time.time, self.retry_policy, self.affinity, self.keeps_results,
                          self.forgets_after)

    @handler
    def enqueue(self, msg: Enqueue) -> dict[str, Any]:
        return self._logic().enqueue([{"key": msg.key, "payload": msg.payload, "priority": msg.priority,
                                       "max_attempts": msg.max_attempts, "session": msg.session}])[0]

    @handler
    def enqueue_many(self, msg: EnqueueMany) -> list[dict[str, Any]]:
        return self._logic().enqueue({"key": i.key, "payload": i.payload, "priority": i.priority,
                                      "max_attempts": i.max_attempts, "session": i.session} for i in msg.items)

    @handler
    def claim(self, msg: Claim) -> list[dict[str, Any]]:
        return self._logic().claim(msg.worker, msg.limit, msg.lease_seconds)

    @handler
    def extend(self, msg: Extend) -> dict[str, Any]:
        return self._logic().extend(msg.item, msg.token, msg.lease_seconds)

    @handler
    def extend_many(self, msg: ExtendMany) -> list[dict[str, Any]]:
        return self._logic().extend_many(((h.item, h.token) for h in msg.items), msg.lease_seconds)

    @handler
    def complete(self, msg: Complete) -> dict[str, Any]:
        return self._logic().complete(msg.item, msg.token, msg.result)

    @handler
    def complete_many(self, msg: CompleteMany) -> list[dict[str, Any]]:
        return self._logic().complete_many((c.item, c.token, c.result) for c in msg.items)

    @handler
    def fail(self, msg: Fail) -> dict[str, Any]:
        return self._logic().fail(msg.item, msg.token, msg.reason, msg.retry)

    @handler
    def fail_many(self, msg: FailMany) -> list[dict[str, Any]]:
        return self._logic().fail_many((f.item, f.token, f.reason, f.retry) for f in msg.items)

    @handler
    def replay(self, msg: Replay) -> dict[str, Any]:
        return self._logic().replay(msg.items if msg.items else None, msg.limit, msg.who)

    @handler
    def items(self, msg: Items) -> dict[str, Any]:
        return self._logic().items(msg.state, msg.after, msg.limit)

    @handler
    def results(self, msg: Results) -> dict[str, Any]:
        return self._logic().results(msg.after, msg.limit)

    @handler
    def ack(self, msg: Ack) -> dict[str, Any]:
        return self._logic().ack(msg.upto)

    @handler
    def stats(self, msg: QueueStats) -> dict[str, Any]:
        return self._logic().stats()

    @handler
    def item(self, msg: GetItem) -> dict[str, Any]:
        return self._logic().item(msg.item)
