"""``QueueSet``: one logical work queue over several ``WorkQueue`` agents, partitioned by key.

When one queue agent is not enough (its one-message-at-a-time handling is
the bound: see the README's figure), spread the items over ``N`` of them.  An
item's partition is a pure function of its key (:func:`partition_of`:
BLAKE2b of the key, modulo ``N``), or of its session when it has one (so a
session's items share a partition, and its affinity holds across the set), so
everything about one item -- its enqueue, a duplicate enqueue, claim, extend,
complete, fail -- reaches the same agent, and each agent keeps every guarantee
of a single queue for its items (idempotent enqueue, atomic claims, leases,
exactly-once completion, retries, poison, session affinity).  An item of a
session is reached through its session: pass ``session`` (a claimed item's
``session``) to ``extend``, ``complete`` and ``fail``, and in each
``Completion`` or ``Failure``; a key enqueued under two sessions (or with and
without one) may be two items, one in each partition.  What a set does not give: one priority order across partitions (a
claim visits the partitions in turn, each in its own order) and results in
one global completion order (each partition's are in order; the set's cursor
is one per partition).

The partition count is fixed for the set's life: changing it would route an
existing item's completion to an agent that never saw it.

A claim starts at a partition chosen by the worker's name and goes round
until ``limit`` items are leased or every partition was asked once, so
workers spread over the partitions instead of all draining the first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _workqueue as wq
from .exceptions import ConfigError

__all__ = ["QueueSet", "partition_of"]

_STATES = ("pending", "leased", "done", "dead")


def partition_of(key: str, partitions: int) -> int:
    """The partition (``0 <= p < partitions``) of ``key``: stable across processes and Python versions."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


class QueueSet:
    """``N`` queue agents as one queue (see the module docstring); made with :meth:`spawn` or :meth:`lookup`.

    Every call is an ``ask`` to the one agent concerned (or, for a claim, the
    stats and results, to each in turn); ``timeout`` is each ask's.
    """

    def __init__(self, refs: Sequence[Any], *, timeout: float = 30.0) -> None:
        if not refs:
            raise ConfigError("a queue set needs at least one queue agent")
        self.refs = list(refs)
        self.timeout = timeout

    @staticmethod
    def ids(name: str, partitions: int) -> list[str]:
        """The agent ids of set ``name``'s partitions: ``<name>-0`` ... ``<name>-<N-1>``."""
        if partitions < 1:
            raise ConfigError(f"partitions must be at least 1, not {partitions}")
        return [f"{name}-{i}" for i in range(partitions)]

    @classmethod
    def spawn(cls, system: Any, name: str, partitions: int, *, timeout: float = 30.0, **spawn: Any) -> QueueSet:
        """Spawn the set's ``WorkQueue`` agents on ``system`` (``spawn`` as for ``System.spawn``: config, init)."""
        return cls([system.spawn(wq.WorkQueue, agent_id, **spawn) for agent_id in cls.ids(name, partitions)],
                   timeout=timeout)

    @classmethod
    def lookup(cls, system: Any, name: str, partitions: int, *, timeout: float = 30.0) -> QueueSet:
        """The running set ``name`` of ``partitions`` agents, from any driver on the cluster."""
        return cls([system.lookup(agent_id) for agent_id in cls.ids(name, partitions)], timeout=timeout)

    def _ref(self, key: str, session: str | None = None) -> Any:
        return self.refs[partition_of(key if session is None else session, len(self.refs))]

    def _ask(self, ref: Any, msg: Any) -> Any:
        return ref.ask(msg, timeout=self.timeout)

    # -- one item: the agent its key routes to ------------------------------------------------

    def enqueue(self, key: str, payload: Any = None, priority: int = 0, max_attempts: int | None = None,
                session: str | None = None) -> dict:
        """As ``Enqueue``, on the partition of the key (or of the session); the answer names it (``queue``)."""
        ref = self._ref(key, session)
        answer = self._ask(ref, wq.Enqueue(key=key, payload=payload, priority=priority, max_attempts=max_attempts,
                                           session=session))
        return {**answer, "queue": ref.agent_id}

    def extend(self, item: str, token: int, lease_seconds: float = 30.0, *, session: str | None = None) -> dict:
        return self._ask(self._ref(item, session), wq.Extend(item=item, token=token, lease_seconds=lease_seconds))

    def complete(self, item: str, token: int, result: Any = None, *, session: str | None = None) -> dict:
        return self._ask(self._ref(item, session), wq.Complete(item=item, token=token, result=result))

    def fail(self, item: str, token: int, reason: str = "", retry: bool = True, *, session: str | None = None) -> dict:
        return self._ask(self._ref(item, session), wq.Fail(item=item, token=token, reason=reason, retry=retry))

    # -- many items: one message per partition concerned ----------------------------------------

    def _grouped(self, keys: Iterable[str]) -> dict[int, list[int]]:
        """Positions of ``keys`` by partition, in order."""
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(partition_of(key, len(self.refs)), []).append(position)
        return groups

    def _per_partition(self, keys: Sequence[str], ask: Callable[[Any, list[int]], list[dict]]) -> list[dict]:
        """``ask(ref, positions)`` once per partition ``keys`` reach; the answers in the order of ``keys``."""
        answers: list[dict] = [{}] * len(keys)
        for p, positions in self._grouped(keys).items():
            for position, answer in zip(positions, ask(self.refs[p], positions), strict=True):
                answers[position] = answer
        return answers

    def enqueue_many(self, items: Sequence[wq.NewItem]) -> list[dict]:
        """As ``EnqueueMany``: one message per partition; the answers (naming their ``queue``) in order."""
        return self._per_partition([i.key if i.session is None else i.session for i in items], lambda ref, at: [
            {**answer, "queue": ref.agent_id} for answer in self._ask(ref, wq.EnqueueMany(items=[items[i] for i in at]))])

    def complete_many(self, completions: Sequence[wq.Completion]) -> list[dict]:
        """As ``CompleteMany``: one message per partition; the outcomes in the order of ``completions``."""
        return self._per_partition([c.item if c.session is None else c.session for c in completions],
                                   lambda ref, at: self._ask(ref, wq.CompleteMany(items=[completions[i] for i in at])))

    def fail_many(self, failures: Sequence[wq.Failure]) -> list[dict]:
        """As ``FailMany``: one message per partition; the outcomes in the order of ``failures``."""
        return self._per_partition([f.item if f.session is None else f.session for f in failures],
                                   lambda ref, at: self._ask(ref, wq.FailMany(items=[failures[i] for i in at])))

    # -- the whole set ------------------------------------------------------------------------

    def claim(self, worker: str, limit: int = 1, lease_seconds: float = 30.0) -> list[dict]:
        """Up to ``limit`` items, from the partitions in turn starting at the worker's (each item names its ``queue``)."""
        start = partition_of(worker, len(self.refs))
        leased: list[dict] = []
        for step in range(len(self.refs)):
            if len(leased) >= limit:
                break
            ref = self.refs[(start + step) % len(self.refs)]
            got = self._ask(ref, wq.Claim(worker=worker, limit=limit - len(leased), lease_seconds=lease_seconds))
            leased.extend({**item, "queue": ref.agent_id} for item in got)
        return leased

    def results(self, cursors: dict[str, int] | None = None, limit: int = 100) -> dict[str, Any]:
        """Completed items from each partition after its cursor (at most ``limit`` a partition).

        Returns ``{"items", "cursors"}``: pass ``cursors`` back for more.  Items are in
        completion order within a partition (each names its ``queue``), not across them.
        """
        cursors = dict(cursors or {})
        items: list[dict] = []
        for ref in self.refs:
            page = self._ask(ref, wq.Results(after=cursors.get(ref.agent_id, 0), limit=limit))
            items.extend({**item, "queue": ref.agent_id} for item in page["items"])
            cursors[ref.agent_id] = page["cursor"]
        return {"items": items, "cursors": cursors}

    def stats(self) -> dict[str, Any]:
        """Each state's count summed and oldest age the oldest over the partitions, ``depth``, and ``partitions``."""
        per = {ref.agent_id: self._ask(ref, wq.QueueStats()) for ref in self.refs}
        out: dict[str, Any] = {}
        for state in _STATES:
            ages = [s[state]["oldest_age"] for s in per.values() if s[state]["oldest_age"] is not None]
            out[state] = {"count": sum(s[state]["count"] for s in per.values()), "oldest_age": max(ages, default=None)}
        out["depth"] = sum(s["depth"] for s in per.values())
        out["partitions"] = per
        return out
