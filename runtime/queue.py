"""The durable work queue: ``from runtime.queue import WorkQueue, Claim, Complete, ...``.

:class:`WorkQueue` is a Garrison agent (its state in LMDB, checkpointed,
supervisable) holding work items; workers claim them with a lease, extend it
while they work, and complete or fail them; downstream consumers read the
results in completion order.  Its messages have names of their own
(``garrison.queue.claim@1`` ...) and live here rather than in ``runtime``'s namespace,
where names such as ``Claim`` or ``Fail`` would say too little.  The rules are
in :mod:`runtime._queue_logic`; the agent in :mod:`runtime._workqueue`.
``WorkQueue``, ``RetryPolicy`` and the queue's errors (``QueueError``,
``LeaseLost``, ``UnknownItem``) are in ``runtime`` too.  :class:`QueueSet` spreads one queue over
several queue agents, partitioned by key (:mod:`runtime._queueset`); :class:`QueueWorker` is an
agent that pulls from a queue and does each item once (:mod:`runtime._queueworker`), what
``supervisors.start_pool`` sizes on the queue.
"""

from __future__ import annotations

from ._queue_logic import RetryPolicy
from ._queueset import QueueSet, partition_of
from ._queueworker import Forget, Process, QueueWorker
from ._workqueue import (
    Ack,
    Claim,
    Complete,
    CompleteMany,
    Completion,
    Enqueue,
    EnqueueMany,
    Extend,
    ExtendMany,
    Fail,
    FailMany,
    Failure,
    GetItem,
    Held,
    Items,
    NewItem,
    QueueStats,
    Replay,
    Results,
    WorkQueue,
)
from .exceptions import LeaseLost, QueueError, UnknownItem

__all__ = [
    "Ack",
    "Claim",
    "Complete",
    "CompleteMany",
    "Completion",
    "Enqueue",
    "EnqueueMany",
    "Extend",
    "ExtendMany",
    "Fail",
    "FailMany",
    "Failure",
    "Forget",
    "GetItem",
    "Held",
    "Items",
    "LeaseLost",
    "NewItem",
    "Process",
    "QueueError",
    "QueueSet",
    "QueueStats",
    "QueueWorker",
    "Replay",
    "Results",
    "RetryPolicy",
    "UnknownItem",
    "WorkQueue",
    "partition_of",
]
