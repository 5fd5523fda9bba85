"""The work queue's rules, as a plain class over a key-value store and a clock (no Ray, no LMDB).

:class:`QueueLogic` is what the :class:`~runtime.WorkQueue` agent runs for each message, over its
``self.state``; tests run it over a dict (:class:`MemoryKV`) with a fake clock.  Every method reads
what it needs, changes the store and returns plain data (msgpack-able dicts); a refused request
raises :class:`LeaseLost` or :class:`UnknownItem` *before* it changes anything, so a refusal leaves
the store as it found it (the agent's host also rolls a raising handler back).

An item's life::

    enqueue ──► pending ──claim──► leased ──complete──► done ──ack──► (result dropped, item kept)
                  ▲  ▲               │ │
                  │  └── lease ──────┘ └──fail(retry)──► pending after a backoff (waiting)
                  │     expired                       └──► dead when out of attempts, or fail(retry=False)
                  └─────────── (an expired lease is a failed attempt too; out of attempts: dead)

Semantics, with their edge cases:

- **Identity and idempotency.** An item's id is its idempotency key.  Enqueueing a key that exists
  (in any state, acked results included) changes nothing and answers ``duplicate: True`` with the
  existing item's state.
- **Order.** A claim takes the highest priority first, then first in, first out within a priority.
  An item that goes back to pending (lease expired, retry after a backoff) joins the end of its
  priority's line.
- **Leases and fencing.** A claim makes the item ``leased`` until ``lease_until = now +
  lease_seconds`` and gives it a token: its attempt number (1 for the first claim).  The lease holds
  while ``now < lease_until``; from then on it is lost, whether or not anyone has looked: extend,
  complete and fail with that token are refused with :class:`LeaseLost`, and the next claim or stats
  call applies the expiry (lazily: there is no timer).  A lost lease is a failed attempt: the item is
  pending again at once (its lease was its delay), or dead if it has had ``max_attempts`` claims.
- **Completion.** Exactly once per item: the first valid completion stores the result and numbers
  it in completion order; the same completion again (same item and token) answers
  ``already_completed`` and changes nothing; any other token is refused (:class:`LeaseLost`).
- **Failure.** ``fail(retry=True)`` puts the item back after ``RetryPolicy.delay(attempts)``
  (exponential, capped) unless it has had ``max_attempts`` claims; ``retry=False`` makes it dead
  at once.  Dead items stay, with the reason, for an operator.
- **Results.** ``results(after, limit)`` reads completed items in completion order from a cursor
  (the ``seq`` of the last one read); ``ack(upto)`` drops results up to a cursor (the item stays,
  so a late duplicate enqueue is still a duplicate).

Cost: a claim of ``limit`` items reads about ``limit`` item records plus one key per priority in
use and one chunk of ids per :attr:`ReadyLines.CHUNK` items; its lease is one key for the whole
batch (``l/<until>/<n>``), and completions only decrement it.  Results are read by number.
Applying expiries and backoffs scans the lease (``l/``) and waiting (``w/``) indexes, but only
when the earliest deadline recorded is due (``lease_check``, ``wait_check``): their size is bounded
by the work in flight, not by the queue's depth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ._backoff import Backoff
from .exceptions import LeaseLost, UnknownItem

__all__ = ["PRIORITY_RANGE", "KeyValue", "MemoryKV", "QueueLogic", "ReadyLines", "ResultLog", "RetryPolicy"]

#: Priorities are ints in ``[-PRIORITY_RANGE, PRIORITY_RANGE]``; higher is claimed first.
PRIORITY_RANGE = 999_999_999
STATES = ("pending", "leased", "done", "dead")
_META = "q/meta"


class KeyValue(Protocol):
    """What the queue needs of a store: ``runtime.State`` is one, :class:`MemoryKV` another."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> bool: ...

    def scan(self, prefix: str = "") -> Iterator[tuple[str, Any]]: ...


class MemoryKV:
    """A dict with the :class:`KeyValue` interface (``scan`` in key order), for tests."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def scan(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed item is tried again, and how often: ``delay(n) = min(max, base * factor ** (n - 1))``.

    ``max_attempts`` counts claims: an item claimed that many times and failed (or whose lease
    expired) each time is dead.  An item may set its own ``max_attempts`` when enqueued.
    """

    #: Seconds before the retry after the first failed attempt.
    base: float = 1.0
    #: Growth per further attempt.
    factor: float = 2.0
    #: Longest delay.
    max: float = 300.0
    #: Claims an item gets before it is dead.
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts claims: at least 1")
        Backoff(self.base, self.factor, self.max)  # checks the numbers

    def delay(self, attempts: int) -> float:
        """Seconds to wait after failed attempt number ``attempts`` (>= 1) before the item is claimable."""
        return Backoff(self.base, self.factor, self.max).delay(max(attempts - 1, 0))


def _inv(priority: int) -> str:
    """Priority as a key part that sorts highest first."""
    if not -PRIORITY_RANGE <= priority <= PRIORITY_RANGE:
        raise ValueError(f"priority {priority} is outside [-{PRIORITY_RANGE}, {PRIORITY_RANGE}]")
    return f"{PRIORITY_RANGE - priority:010d}"


def _time(t: float) -> str:
    """A time as a fixed-width key part that sorts in time order (non-negative times)."""
    return f"{t:017.6f}"


def _num(n: int) -> str:
    return f"{n:012d}"


def _new_meta() -> dict[str, Any]:
    return {"seq": 0, "done": 0, "acked": 0, "dead": 0, "leases": 0, "count": dict.fromkeys(STATES, 0),
            "lease_check": None, "wait_check": None}


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _refusal(item: dict[str, Any], token: int, now: float) -> str | None:
    """Why ``token`` does not hold the item's lease at ``now`` (None: it does)."""
    if item["attempts"] > token:
        return f"it was claimed again (current token {item['attempts']}, {item['state']})"
    if item["attempts"] < token:
        return f"it has had {item['attempts']} claims: no lease has that token"
    if item["state"] != "leased":
        return f"it is {item['state']}"
    if now >= item["lease_until"]:
        return f"its lease expired at {item['lease_until']:.3f}"
    return None


class ReadyLines:
    """The pending items ready to claim: one line per priority, first in first out, in chunks.

    Keys: ``lv/<inverted priority>`` -> ``{"head", "tail"}`` (chunk numbers), and
    ``r/<inverted priority>/<chunk>`` -> a list of up to :attr:`CHUNK` item ids.  A claim of ``k``
    items reads and rewrites about ``k / CHUNK + 1`` chunks.  Changes are kept here and written by
    :meth:`save`, once per operation.
    """

    CHUNK = 512

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.lines: dict[str, dict[str, int]] = {}
        self.chunks: dict[str, list[str]] = {}

    def _line(self, inv: str, stored: dict[str, int] | None = None) -> dict[str, int]:
        line = self.lines.get(inv)
        if line is None:
            line = self.lines[inv] = stored or self.kv.get("lv/" + inv) or {"head": 0, "tail": 0}
        return line

    def _chunk(self, inv: str, n: int) -> list[str]:
        key = f"r/{inv}/{_num(n)}"
        chunk = self.chunks.get(key)
        if chunk is None:
            chunk = self.chunks[key] = self.kv.get(key) or []
        return chunk

    def push(self, priority: int, item_id: str) -> None:
        """Put ``item_id`` at the end of its priority's line."""
        inv = _inv(priority)
        line = self._line(inv)
        chunk = self._chunk(inv, line["tail"])
        if len(chunk) >= self.CHUNK:
            line["tail"] += 1
            chunk = self._chunk(inv, line["tail"])
        chunk.append(item_id)

    def take(self, limit: int) -> list[str]:
        """Remove and return up to ``limit`` ids: highest priority first, first in first out."""
        self.save()  # lines pushed in this operation are in the scan
        taken: list[str] = []
        for key, stored in list(self.kv.scan("lv/")):
            inv = key[3:]
            line = self._line(inv, stored)
            while len(taken) < limit:
                chunk = self._chunk(inv, line["head"])
                want = limit - len(taken)
                taken.extend(chunk[:want])
                del chunk[:want]
                if chunk or line["head"] >= line["tail"]:
                    break
                line["head"] += 1
            if len(taken) >= limit:
                break
        return taken

    def heads(self) -> list[str]:
        """The first id of each line (the oldest there)."""
        out = []
        for key, line in self.kv.scan("lv/"):
            chunk = self.kv.get(f"r/{key[3:]}/{_num(line['head'])}") or []
            out.extend(chunk[:1])
        return out

    def save(self) -> None:
        for key, chunk in self.chunks.items():
            if chunk:
                self.kv.put(key, chunk)
            else:
                self.kv.delete(key)
        for inv, line in self.lines.items():
            if line["head"] < line["tail"] or self.chunks.get(f"r/{inv}/{_num(line['head'])}"):
                self.kv.put("lv/" + inv, line)
            else:
                self.kv.delete("lv/" + inv)
        self.chunks.clear()
        self.lines.clear()


class QueueLogic:
    """One queue's operations over ``kv`` at times given by ``clock`` (see the module docstring).

    Make one per operation (the agent does, per message) or keep one: it holds nothing between
    calls but its collaborators.

    Keys: ``q/meta`` (counters), ``i/<id>`` (the item), the ready lines (:class:`ReadyLines`),
    ``l/<until>/<n>`` (the items leased by one claim until then: ``{"ids", "open"}``, ``open``
    counting those not yet finished), ``w/<until>/<id>`` (waiting out a backoff), ``d/<seq>``
    (completed, in completion order) and ``x/<seq>`` (dead, in order).
    """

    def __init__(self, kv: KeyValue, clock: Callable[[], float], policy: RetryPolicy | None = None) -> None:
        self.kv = kv
        self.clock = clock
        self.policy = policy or RetryPolicy()

    # -- the bookkeeping record ------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return self.kv.get(_META) or _new_meta()

    def _item(self, item_id: str) -> dict[str, Any]:
        item = self.kv.get("i/" + item_id)
        if item is None:
            raise UnknownItem(f"no item {item_id!r} in this queue", item=item_id)
        return item

    @staticmethod
    def _move(meta: dict[str, Any], item: dict[str, Any], state: str, now: float) -> None:
        count = meta["count"]
        count[item["state"]] -= 1
        count[state] += 1
        item["state"] = state
        item["since"] = now

    def _max_attempts(self, item: dict[str, Any]) -> int:
        return item["max_attempts"] or self.policy.max_attempts

    def _bury(self, meta: dict[str, Any], item: dict[str, Any], now: float) -> None:
        self._move(meta, item, "dead", now)
        meta["dead"] += 1
        self.kv.put(f"x/{_num(meta['dead'])}", item["id"])

    # -- enqueue ---------------------------------------------------------------------------------

    def enqueue(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add items (``key``, ``payload``, ``priority``, ``max_attempts``): one answer each, in order.

        An answer is ``{"id", "duplicate", "state", "attempts"}``; a duplicate changes nothing.
        """
        now = self.clock()
        meta = self._meta()
        ready = ReadyLines(self.kv)
        answers = []
        for spec in items:
            key = spec["key"]
            existing = self.kv.get("i/" + key)
            if existing is not None:
                answers.append({"id": key, "duplicate": True, "state": existing["state"],
                                "attempts": existing["attempts"]})
                continue
            priority = int(spec.get("priority", 0))
            ready.push(priority, key)
            meta["seq"] += 1
            self.kv.put("i/" + key, {
                "id": key, "priority": priority, "payload": spec.get("payload"), "state": "pending", "attempts": 0,
                "max_attempts": spec.get("max_attempts"), "seq": meta["seq"], "enqueued_at": now, "since": now,
                "lease_until": None, "lease": None, "worker": None, "result": None, "done_seq": None,
                "reason": None, "retry_at": None})
            meta["count"]["pending"] += 1
            answers.append({"id": key, "duplicate": False, "state": "pending", "attempts": 0})
        ready.save()
        self.kv.put(_META, meta)
        return answers

    # -- time passing: expired leases and finished backoffs ----------------------------------------

    def _catch_up(self, meta: dict[str, Any], now: float, ready: ReadyLines) -> None:
        """Apply every lease expiry and backoff end due at ``now`` (lazily: there is no timer)."""
        if meta["lease_check"] is not None and now >= meta["lease_check"]:
            meta["lease_check"] = None
            for key, lease in list(self.kv.scan("l/")):
                until = float(key.split("/", 2)[1])
                if until > now:
                    meta["lease_check"] = until  # the scan is in time order: the earliest left
                    break
                self.kv.delete(key)
                for item_id in lease["ids"]:
                    item = self.kv.get("i/" + item_id)
                    if item["state"] != "leased" or item["lease"] != key:
                        continue  # finished, or its lease was extended (another entry holds it)
                    item["reason"] = f"lease expired (attempt {item['attempts']}, worker {item['worker']})"
                    if item["attempts"] >= self._max_attempts(item):
                        self._bury(meta, item, now)
                    else:
                        self._move(meta, item, "pending", now)
                        ready.push(item["priority"], item_id)
                    item["lease_until"] = item["lease"] = None
                    self.kv.put("i/" + item_id, item)
        if meta["wait_check"] is not None and now >= meta["wait_check"]:
            meta["wait_check"] = None
            for key, item_id in list(self.kv.scan("w/")):
                until = float(key.split("/", 2)[1])
                if until > now:
                    meta["wait_check"] = until
                    break
                self.kv.delete(key)
                item = self.kv.get("i/" + item_id)
                ready.push(item["priority"], item_id)
                item["retry_at"] = None
                self.kv.put("i/" + item_id, item)

    def _lease(self, meta: dict[str, Any], ids: list[str], until: float) -> str:
        """Record a lease of ``ids`` until ``until``: its key."""
        meta["leases"] += 1
        key = f"l/{_time(until)}/{_num(meta['leases'])}"
        self.kv.put(key, {"ids": ids, "open": len(ids)})
        meta["lease_check"] = _min(meta["lease_check"], until)
        return key

    def _release(self, finished: dict[str, int]) -> None:
        """``finished``: lease key -> how many of its items were finished (or moved to another lease)."""
        for key, n in finished.items():
            lease = self.kv.get(key)
            if lease is None:
                continue
            lease["open"] -= n
            if lease["open"] > 0:
                self.kv.put(key, lease)
            else:
                self.kv.delete(key)

    # -- claim, extend ---------------------------------------------------------------------------

    def claim(self, worker: str, limit: int = 1, lease_seconds: float = 30.0) -> list[dict[str, Any]]:
        """Lease up to ``limit`` items to ``worker``: ``{"id", "token", "lease_until", "payload", "priority"}`` each."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        now = self.clock()
        meta = self._meta()
        ready = ReadyLines(self.kv)
        self._catch_up(meta, now, ready)
        ids = ready.take(limit)
        ready.save()
        claimed: list[dict[str, Any]] = []
        if ids:
            until = now + lease_seconds
            lease = self._lease(meta, ids, until)
            for item_id in ids:
                item = self.kv.get("i/" + item_id)
                self._move(meta, item, "leased", now)
                item["attempts"] += 1
                item["lease_until"] = until
                item["lease"] = lease
                item["worker"] = worker
                self.kv.put("i/" + item_id, item)
                claimed.append({"id": item_id, "token": item["attempts"], "lease_until": until,
                                "payload": item["payload"], "priority": item["priority"]})
        self.kv.put(_META, meta)
        return claimed

    def _leased(self, item_id: str, token: int, now: float, what: str) -> dict[str, Any]:
        """The item, if ``token`` holds its lease at ``now``; else :class:`LeaseLost` saying why."""
        item = self._item(item_id)
        why = _refusal(item, token, now)
        if why is not None:
            raise LeaseLost(f"cannot {what} item {item_id!r} with token {token}: {why}", item=item_id, token=token,
                            current_token=item["attempts"], state=item["state"])
        return item

    def extend(self, item_id: str, token: int, lease_seconds: float = 30.0) -> dict[str, Any]:
        """Move the lease's end to ``now + lease_seconds``: ``{"id", "token", "lease_until"}``."""
        now = self.clock()
        item = self._leased(item_id, token, now, "extend")
        meta = self._meta()
        self._release({item["lease"]: 1})
        item["lease_until"] = until = now + lease_seconds
        item["lease"] = self._lease(meta, [item_id], until)
        self.kv.put("i/" + item_id, item)
        self.kv.put(_META, meta)
        return {"id": item_id, "token": token, "lease_until": until}

    # -- complete, fail --------------------------------------------------------------------------

    def complete(self, item_id: str, token: int, result: Any = None) -> dict[str, Any]:
        """Record the item's result: ``{"id", "status": "completed" | "already_completed", "seq"}``.

        Raises :class:`LeaseLost` for a token that does not hold the lease, :class:`UnknownItem`.
        """
        outcome = self.complete_many([(item_id, token, result)])[0]
        if outcome["status"] == "unknown":
            raise UnknownItem(f"no item {item_id!r} in this queue", item=item_id)
        if outcome["status"] == "lease_lost":
            raise LeaseLost(outcome["error"], item=item_id, token=token, current_token=outcome["current_token"],
                            state=outcome["state"])
        return outcome

    def complete_many(self, completions: Iterable[tuple[str, int, Any]]) -> list[dict[str, Any]]:
        """Complete several items, each on its own: one outcome per ``(item, token, result)``, in order.

        ``status`` is ``completed``, ``already_completed`` (this token completed it before: nothing
        changed), ``lease_lost`` (with ``error``, ``current_token``, ``state``) or ``unknown``.
        """
        now = self.clock()
        meta = self._meta()
        outcomes = []
        finished: dict[str, int] = {}
        for item_id, token, result in completions:
            item = self.kv.get("i/" + item_id)
            if item is None:
                outcomes.append({"id": item_id, "status": "unknown"})
                continue
            if item["state"] == "done" and item["attempts"] == token:
                outcomes.append({"id": item_id, "status": "already_completed", "seq": item["done_seq"]})
                continue
            why = _refusal(item, token, now)
            if why is not None:
                outcomes.append({"id": item_id, "status": "lease_lost", "current_token": item["attempts"],
                                 "state": item["state"],
                                 "error": f"cannot complete item {item_id!r} with token {token}: {why}"})
                continue
            finished[item["lease"]] = finished.get(item["lease"], 0) + 1
            self._move(meta, item, "done", now)
            meta["done"] += 1
            item["done_seq"] = meta["done"]
            item["result"] = result
            item["lease_until"] = item["lease"] = None
            self.kv.put("i/" + item_id, item)
            self.kv.put(f"d/{_num(meta['done'])}", item_id)
            outcomes.append({"id": item_id, "status": "completed", "seq": meta["done"]})
        self._release(finished)
        self.kv.put(_META, meta)
        return outcomes

    def fail(self, item_id: str, token: int, reason: str = "", retry: bool = True) -> dict[str, Any]:
        """Give the item up: ``{"id", "state": "pending" | "dead", "attempts", "retry_at"}``."""
        now = self.clock()
        item = self._leased(item_id, token, now, "fail")
        meta = self._meta()
        self._release({item["lease"]: 1})
        item["lease_until"] = item["lease"] = None
        item["reason"] = reason
        retry_at = None
        if retry and item["attempts"] < self._max_attempts(item):
            self._move(meta, item, "pending", now)
            retry_at = now + self.policy.delay(item["attempts"])
            item["retry_at"] = retry_at
            self.kv.put(f"w/{_time(retry_at)}/{item_id}", item_id)
            meta["wait_check"] = _min(meta["wait_check"], retry_at)
        else:
            self._bury(meta, item, now)
        self.kv.put("i/" + item_id, item)
        self.kv.put(_META, meta)
        return {"id": item_id, "state": item["state"], "attempts": item["attempts"], "retry_at": retry_at}

    # -- reading ---------------------------------------------------------------------------------

    def item(self, item_id: str) -> dict[str, Any]:
        """The item's record as stored (``state``, ``attempts``, ``result``, ``reason``...)."""
        return self._item(item_id)

    def results(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """Completed items after cursor ``after``, in completion order (see :meth:`ResultLog.read`)."""
        return ResultLog(self.kv).read(self._meta(), after, limit)

    def ack(self, upto: int) -> dict[str, Any]:
        """Drop the results up to cursor ``upto`` (see :meth:`ResultLog.ack`)."""
        meta = self._meta()
        answer = ResultLog(self.kv).ack(meta, upto)
        self.kv.put(_META, meta)
        return answer

    def stats(self) -> dict[str, Any]:
        """Count and age of the oldest item (seconds in that state) per state; ``depth`` = pending + leased.

        Applies due expiries first, so ``leased`` counts live leases only.
        """
        now = self.clock()
        meta = self._meta()
        ready = ReadyLines(self.kv)
        self._catch_up(meta, now, ready)
        ready.save()
        self.kv.put(_META, meta)
        oldest = _oldest(self.kv, meta, ready)
        count = meta["count"]
        out: dict[str, Any] = {
            state: {"count": count[state],
                    "oldest_age": None if oldest[state] is None else max(0.0, now - oldest[state])}
            for state in STATES
        }
        out["depth"] = count["pending"] + count["leased"]
        out["results_acked"] = meta["acked"]
        return out


class ResultLog:
    """Completed items in completion order: ``d/<seq>`` -> item id, read by number from a cursor."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    def read(self, meta: dict[str, Any], after: int, limit: int) -> dict[str, Any]:
        """``{"items", "cursor"}``: up to ``limit`` completed items after ``after``.

        Each is ``{"id", "seq", "result", "attempts", "finished_at"}``; ``cursor`` is the last
        ``seq`` returned (``after`` when there is none): pass it back for the next page.
        """
        start = max(after, meta["acked"]) + 1
        items, cursor = [], after
        for seq in range(start, min(meta["done"], start + limit - 1) + 1):
            item = self.kv.get("i/" + self.kv.get(f"d/{_num(seq)}"))
            items.append({"id": item["id"], "seq": seq, "result": item["result"], "attempts": item["attempts"],
                          "finished_at": item["since"]})
            cursor = seq
        return {"items": items, "cursor": cursor}

    def ack(self, meta: dict[str, Any], upto: int) -> dict[str, Any]:
        """Drop results (and payloads) up to cursor ``upto``; the items stay done: ``{"acked", "dropped"}``."""
        upto = min(upto, meta["done"])
        dropped = 0
        for seq in range(meta["acked"] + 1, upto + 1):
            key = f"d/{_num(seq)}"
            item_id = self.kv.get(key)
            self.kv.delete(key)
            item = self.kv.get("i/" + item_id)
            item["result"] = item["payload"] = None
            self.kv.put("i/" + item_id, item)
            dropped += 1
        meta["acked"] = max(meta["acked"], upto)
        return {"acked": meta["acked"], "dropped": dropped}


def _oldest(kv: KeyValue, meta: dict[str, Any], ready: ReadyLines) -> dict[str, float | None]:
    """When the oldest item of each state entered it (None: no item in that state)."""
    oldest: dict[str, float | None] = dict.fromkeys(STATES)
    for item_id in ready.heads():
        oldest["pending"] = _min(oldest["pending"], kv.get("i/" + item_id)["since"])
    for _, item_id in kv.scan("w/"):
        oldest["pending"] = _min(oldest["pending"], kv.get("i/" + item_id)["since"])
    for key, lease in kv.scan("l/"):
        for item_id in lease["ids"]:
            item = kv.get("i/" + item_id)
            if item["state"] == "leased" and item["lease"] == key:
                oldest["leased"] = _min(oldest["leased"], item["since"])
    if meta["done"] > meta["acked"]:
        oldest["done"] = kv.get("i/" + kv.get(f"d/{_num(meta['acked'] + 1)}"))["since"]
    if meta["dead"]:
        oldest["dead"] = kv.get("i/" + kv.get(f"x/{_num(1)}"))["since"]
    return oldest
