"""The work queue's rules, as a plain class over a key-value store and a clock (no Ray, no LMDB).

:class:`QueueLogic` is what the :class:`~runtime.WorkQueue` agent runs for each message, over its
``self.state``; tests run it over a dict (:class:`MemoryKV`) with a fake clock.  Every method reads
what it needs, changes the store and returns plain data (msgpack-able dicts); a refused request
raises :class:`LeaseLost`, :class:`UnknownItem` or :class:`QueueError` *before* it changes anything,
so a refusal leaves the store as it found it (the agent's host also rolls a raising handler back).

An item's life::

    enqueue ──► pending ──claim──► leased ──complete──► done ──ack──► (result dropped, item kept)
                  ▲  ▲               │ │
                  │  └── lease ──────┘ └──fail(retry)──► pending after a backoff (waiting)
                  │     expired                       └──► dead when out of attempts, or fail(retry=False)
                  ├─────────── (an expired lease is a failed attempt too; out of attempts: dead)
                  └─────────── replay (an operator's): dead ──► pending, attempts from 0 again

Semantics, with their edge cases:

- **Identity and idempotency.** An item's id is its idempotency key.  Enqueueing a key that exists
  (in any state, acked results included) changes nothing and answers ``duplicate: True`` with the
  existing item's state.
- **Order.** A claim takes the highest priority first, then first in, first out within a priority.
  An item that goes back to pending (lease expired, retry after a backoff, replay) joins the end of
  its priority's line.  Sessions (below) come first for their worker.
- **Leases and fencing.** A claim makes the item ``leased`` until ``lease_until = now +
  lease_seconds`` and gives it a token: its claim number (1 for the first claim; never reused, a
  replay included).  The lease holds while ``now < lease_until``; from then on it is lost, whether
  or not anyone has looked: extend, complete and fail with that token are refused with
  :class:`LeaseLost`, and the next claim, stats or listing applies the expiry (lazily: there is no
  timer).  A lost lease is a failed attempt: the item is pending again at once (its lease was its
  delay), or dead if it has had ``max_attempts`` attempts.
- **Completion.** Exactly once per item: the first valid completion stores the result and numbers
  it in completion order; the same completion again (same item and token) answers
  ``already_completed`` and changes nothing; any other token is refused (:class:`LeaseLost`).
  ``complete_many`` answers per item instead of raising.  A queue whose results nobody reads (a
  pipeline's inner stages: a worker hands the ticket on before it completes the item) is made with
  ``keep_results=False``:
  each completion drops its result and payload at once, as an ack of it would, so done items keep
  only their record.
- **Forgetting.** By default a done item is kept for ever: its key stays a duplicate.  A queue made
  with ``forget_after`` seconds forgets a done item that long after it completed, once its result
  was acked: its record and its completion number are deleted, and its key can be enqueued again as
  a new item.  ``forget_after`` is the queue's idempotency window for done items (a duplicate
  enqueue or completion later than that is new work or ``unknown``); ``stats`` keeps counting
  forgotten items as done (``forgotten`` says how many).  Each completion or ack forgets what is due,
  oldest first, up to twice its own size (at least a page), so forgetting keeps up with completions.
- **Failure.** ``fail(retry=True)`` puts the item back after ``RetryPolicy.delay(attempts)``
  (exponential, capped) unless it has had ``max_attempts`` attempts; ``retry=False`` makes it dead
  at once.  Dead items stay, with the reason, for an operator.  ``fail_many`` fails several, each
  with its own token and reason, answering per item (``failed``, ``lease_lost``, ``unknown``) as
  ``complete_many`` does: a stale token refuses that item only.
- **Replay.** ``replay`` (an operator's action) moves dead items back to pending, by id or the
  oldest ``limit`` of them: attempts start from 0 again (the token goes on counting, so a token of
  the item's earlier life stays dead), the reason moves into the item's ``replays`` record (when,
  by whom, after how many attempts; ``replay_count`` in all).  Only dead items: any other state,
  or an unknown id, refuses the whole request (:class:`QueueError`) and nothing changes.
- **Results.** ``results(after, limit)`` reads completed items in completion order from a cursor
  (the ``seq`` of the last one read); ``ack(upto)`` drops results up to a cursor (the item stays,
  so a late duplicate enqueue is still a duplicate).
- **Listing.** ``items(state, after, limit)`` pages through the items of one state (or of all:
  pending, leased, dead, then done) from the indexes, never loading the whole table: pending in
  claim order (the common lines, then the sessions', then those waiting out a backoff), leased by
  lease end, dead and done in the order they got there.  ``cursor`` is opaque: pass it back as
  ``after``.  A page is one consistent look; an item that changes state between pages may be seen
  twice or not at all, as with any paging over a live queue.
- **Session affinity.** An item may belong to a ``session`` (a string).  A worker's claim of one
  of a session's items *binds* the session to that worker until ``max(lease_until, now +
  affinity_seconds)``; each further claim or extend of one of its items by that worker pushes the
  end on (never back).  While bound, only that worker can claim the session's items, and its claims
  take them first (before any other item, whatever the priorities); other workers' claims pass
  them over at no cost (a bound session's items are not in the common lines).  A binding outlasts
  its worker's leases on the session's items, so at any moment at most one worker holds live
  leases on a session's items.  Once the end passes -- the worker neither claimed nor extended one
  of its items within ``affinity_seconds`` and holds no live lease on one: presumed dead, or done
  with it -- the session is free: its ready items wait in the common lines as an entry at their
  highest priority, and the worker whose claim reaches that entry gets the session's first item
  (highest priority, oldest) and the binding.
  An item of a bound session that comes back (lease expired, backoff over) waits for the bound
  worker while the binding lasts.  ``affinity_seconds=0``: bound only while the leases last.

Cost: a claim of ``limit`` items reads about ``limit`` item records plus one key per priority in
use and one chunk of ids per :attr:`ReadyLines.CHUNK` items; its lease is one key for the whole
batch (``l/<until>/<n>``), and completions only decrement it.  Completions are numbered in pages of
:data:`DONE_PAGE` (a batch writes each page it adds to once: :class:`ResultLog`); results are read by number.
Applying expiries and backoffs scans the lease (``l/``) and waiting (``w/``) indexes, but only
when the earliest deadline recorded is due (``lease_check``, ``wait_check``): their size is bounded
by the work in flight, not by the queue's depth.  Sessions cost nothing while a queue has none
(``sessions`` counts their records); with some, a claim also reads the claiming worker's bound
sessions that have ready items (one key each) and each session it takes items of, and binding ends
are a time index like the leases' (``b/``, ``bind_check``).  A listing page reads about ``limit``
items and its index's keys up to them (the lease, waiting and session records are scanned whole:
bounded by the work in flight).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from ._backoff import Backoff
from .exceptions import LeaseLost, QueueError, UnknownItem

__all__ = ["PRIORITY_RANGE", "DeadItems", "KeyValue", "Listing", "MemoryKV", "QueueLogic", "ReadyLines", "ResultLog",
           "RetryPolicy", "Sessions", "Step", "checked_forget_after"]

#: Priorities are ints in ``[-PRIORITY_RANGE, PRIORITY_RANGE]``; higher is claimed first.
PRIORITY_RANGE = 999_999_999
STATES = ("pending", "leased", "done", "dead")
#: The order of a listing of every state.
LISTED = ("pending", "leased", "dead", "done")
#: Replay records kept in an item (the newest; ``replay_count`` counts them all).
REPLAY_HISTORY = 20
_META = "q/meta"
#: Numbered indexes (``x/``, and ``d/`` of queues written before pages) are read a bucket of ``10 ** _BUCKET_DIGITS`` numbers per scan.
_BUCKET_DIGITS = 2
#: Completion numbers per page of the done index (``dp/<page>``, see :class:`ResultLog`).
DONE_PAGE = 100


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


def _enc(name: str) -> str:
    """A session's or worker's name as one key part (no ``/`` in it, so no prefix of another's)."""
    return quote(name, safe="")


def _new_meta() -> dict[str, Any]:
    return {"seq": 0, "done": 0, "acked": 0, "dead": 0, "leases": 0, "count": dict.fromkeys(STATES, 0),
            "lease_check": None, "wait_check": None, "dead_from": 1, "sessions": 0, "bind_check": None,
            "done_paged": 1, "forgotten": 0}


def _load_meta(kv: KeyValue) -> dict[str, Any]:
    meta = kv.get(_META)
    if meta is None:
        return _new_meta()
    if "sessions" not in meta:  # written before replays and sessions: x/ was never thinned
        meta.update({"dead_from": 1, "sessions": 0, "bind_check": None})
    if "done_paged" not in meta:  # written before the done index's pages: every number so far has a d/ key
        meta["done_paged"] = meta["done"] + 1
    meta.setdefault("forgotten", 0)  # written before forgetting: nothing forgotten
    return meta


def checked_forget_after(seconds: float | None) -> float | None:
    """``seconds`` for ``forget_after`` (module docstring), or ValueError: positive, or None (kept for ever)."""
    if seconds is not None and not seconds > 0:
        raise ValueError("forget_after must be positive seconds, or None to keep done items for ever")
    return seconds


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _token(item: dict[str, Any]) -> int:
    """The token of the item's latest claim: claims before its last replay, plus its attempts since."""
    return item["attempts"] + item.get("token_base", 0)


def _refusal(item: dict[str, Any], token: int, now: float) -> str | None:
    """Why ``token`` does not hold the item's lease at ``now`` (None: it does)."""
    current = item["attempts"] + item.get("token_base", 0)  # _token(item), inline: once per item completed
    if current > token:
        return f"it was claimed again (current token {current}, {item['state']})"
    if current < token:
        return f"its latest claim has token {current}: no lease has that token"
    if item["state"] != "leased":
        return f"it is {item['state']}"
    if now >= item["lease_until"]:
        return f"its lease expired at {item['lease_until']:.3f}"
    return None


def _lease_lost(item: dict[str, Any], token: int, what: str, why: str) -> dict[str, Any]:
    return {"id": item["id"], "status": "lease_lost", "current_token": _token(item), "state": item["state"],
            "error": f"cannot {what} item {item['id']!r} with token {token}: {why}"}


def _raise(outcome: dict[str, Any], item_id: str, token: int) -> None:
    """Raise the error a batch outcome stands for (``unknown``, ``lease_lost``); nothing otherwise."""
    if outcome["status"] == "unknown":
        raise UnknownItem(f"no item {item_id!r} in this queue", item=item_id)
    if outcome["status"] == "lease_lost":
        raise LeaseLost(outcome["error"], item=item_id, token=token, current_token=outcome["current_token"],
                        state=outcome["state"])


def _numbered(kv: KeyValue, prefix: str, start: int, end: int) -> Iterator[tuple[int, Any]]:
    """``(n, value)`` of the keys ``<prefix><n>`` with ``start <= n <= end``, in order, a bucket per scan.

    A bucket's scan loads only the keys that exist, so a stretch of deleted numbers costs one scan
    per bucket, however many they are.
    """
    size = 10 ** _BUCKET_DIGITS
    n = max(start, 1)
    while n <= end:
        for key, value in kv.scan(prefix + _num(n)[:-_BUCKET_DIGITS]):
            k = int(key[len(prefix):])
            if n <= k <= end:
                yield k, value
        n = (n // size + 1) * size


class ReadyLines:
    """Items ready to claim: one line per priority, first in first out, in chunks.

    Keys: ``<prefix>lv/<inverted priority>`` -> ``{"head", "tail"}`` (chunk numbers), and
    ``<prefix>r/<inverted priority>/<chunk>`` -> a list of up to :attr:`CHUNK` entries.  The queue's
    common lines have no prefix; each session has lines of its own (``sl/<session>/``).  An entry is
    an item id, or in the common lines ``[session]``: a free session's ready items.  A take of ``k``
    entries reads and rewrites about ``k / CHUNK + 1`` chunks.  Changes are kept here and written by
    :meth:`save`, once per operation.
    """

    CHUNK = 512

    def __init__(self, kv: KeyValue, prefix: str = "") -> None:
        self.kv = kv
        self.prefix = prefix
        self.lines: dict[str, dict[str, int]] = {}
        self.chunks: dict[str, list[Any]] = {}

    def _chunk_key(self, inv: str, n: int) -> str:
        return f"{self.prefix}r/{inv}/{_num(n)}"

    def _line(self, inv: str, stored: dict[str, int] | None = None) -> dict[str, int]:
        line = self.lines.get(inv)
        if line is None:
            line = self.lines[inv] = stored or self.kv.get(f"{self.prefix}lv/{inv}") or {"head": 0, "tail": 0}
        return line

    def _chunk(self, inv: str, n: int) -> list[Any]:
        key = self._chunk_key(inv, n)
        chunk = self.chunks.get(key)
        if chunk is None:
            chunk = self.chunks[key] = self.kv.get(key) or []
        return chunk

    def push(self, priority: int, entry: Any) -> None:
        """Put ``entry`` at the end of its priority's line."""
        inv = _inv(priority)
        line = self._line(inv)
        chunk = self._chunk(inv, line["tail"])
        if len(chunk) >= self.CHUNK:
            line["tail"] += 1
            chunk = self._chunk(inv, line["tail"])
        chunk.append(entry)

    def take(self, limit: int) -> list[Any]:
        """Remove and return up to ``limit`` entries: highest priority first, first in first out."""
        self.save()  # lines pushed in this operation are in the scan
        taken: list[Any] = []
        skip = len(self.prefix) + 3
        for key, stored in list(self.kv.scan(self.prefix + "lv/")):
            if len(taken) >= limit:
                break
            inv = key[skip:]
            line = self._line(inv, stored)
            while len(taken) < limit:
                chunk = self._chunk(inv, line["head"])
                want = limit - len(taken)
                taken.extend(chunk[:want])
                del chunk[:want]
                if chunk or line["head"] >= line["tail"]:
                    break
                line["head"] += 1
        return taken

    def top_priority(self) -> int | None:
        """The highest priority with a line (None: no entry)."""
        self.save()
        for key, _ in self.kv.scan(self.prefix + "lv/"):
            return PRIORITY_RANGE - int(key[len(self.prefix) + 3:])
        return None

    def heads(self) -> list[Any]:
        """The first entry of each line (the oldest there)."""
        out = []
        for key, line in self.kv.scan(self.prefix + "lv/"):
            chunk = self.kv.get(self._chunk_key(key[len(self.prefix) + 3:], line["head"])) or []
            out.extend(chunk[:1])
        return out

    def walk(self, after: list[Any] | None = None) -> Iterator[tuple[list[Any], Any]]:
        """``(position, entry)`` in claim order, from just after ``after`` (a position: ``[inv, chunk, id]``).

        Takes only remove entries from a chunk's front, so a position whose entry was taken since
        resumes at the front of its chunk.  Reads the stored lines: :meth:`save` first.
        """
        for key, line in self.kv.scan(self.prefix + "lv/"):
            inv = key[len(self.prefix) + 3:]
            if after and inv < after[0]:
                continue
            here = bool(after) and inv == after[0]
            for n in range(max(line["head"], after[1]) if here else line["head"], line["tail"] + 1):
                chunk = self.kv.get(self._chunk_key(inv, n)) or []
                start = chunk.index(after[2]) + 1 if here and n == after[1] and after[2] in chunk else 0
                for entry in chunk[start:]:
                    yield [inv, n, entry], entry

    def save(self) -> None:
        for key, chunk in self.chunks.items():
            if chunk:
                self.kv.put(key, chunk)
            else:
                self.kv.delete(key)
        for inv, line in self.lines.items():
            if line["head"] < line["tail"] or self.chunks.get(self._chunk_key(inv, line["head"])):
                self.kv.put(f"{self.prefix}lv/{inv}", line)
            else:
                self.kv.delete(f"{self.prefix}lv/{inv}")
        self.chunks.clear()
        self.lines.clear()


class Sessions:
    """Session affinity's bookkeeping (see the module docstring): bindings, and sessions' ready items.

    Keys: ``s/<session>`` -> ``{"worker", "until", "ready", "open", "marker", "hot", "bkey"}`` (the
    bound worker or None, the binding's end, items ready in its lines, items pending or leased,
    the priority of its entry in the common lines or None, whether it is in its worker's ``h/``,
    its ``b/`` key); ``sl/<session>/`` its :class:`ReadyLines`; ``h/<worker>/<session>`` -> session, the
    sessions bound to a worker that have ready items; ``b/<until>/<session>`` -> session, when
    bindings end.  Names are percent-encoded in keys.  A record with no items and no binding is
    dropped.  Records are kept here and written by :meth:`save`, once per operation.
    """

    def __init__(self, kv: KeyValue, meta: dict[str, Any], common: ReadyLines, affinity: float) -> None:
        self.kv = kv
        self.meta = meta
        self.common = common
        self.affinity = affinity
        self.records: dict[str, dict[str, Any]] = {}
        self.stored: dict[str, bool] = {}
        self.lines: dict[str, ReadyLines] = {}

    def record(self, session: str) -> dict[str, Any]:
        rec = self.records.get(session)
        if rec is None:
            stored = self.kv.get("s/" + _enc(session))
            self.stored[session] = stored is not None
            rec = self.records[session] = stored or {"worker": None, "until": 0.0, "ready": 0, "open": 0,
                                                     "marker": None, "hot": False, "bkey": None}
        return rec

    def line(self, session: str) -> ReadyLines:
        line = self.lines.get(session)
        if line is None:
            line = self.lines[session] = ReadyLines(self.kv, f"sl/{_enc(session)}/")
        return line

    @staticmethod
    def bound(rec: dict[str, Any], now: float) -> bool:
        return rec["worker"] is not None and now < rec["until"]

    def _hot(self, session: str, rec: dict[str, Any], on: bool) -> None:
        """Put the session in (or out of) its worker's sessions with ready items."""
        if rec["hot"] == on:
            return
        key = f"h/{_enc(rec['worker'])}/{_enc(session)}"
        if on:
            self.kv.put(key, session)
        else:
            self.kv.delete(key)
        rec["hot"] = on

    def _free(self, session: str, rec: dict[str, Any], priority: int | None) -> None:
        """Make sure a free session with ready items has an entry in the common lines at ``priority``
        (None: its first item's) or above.  An entry left behind is harmless: see :meth:`take_free`."""
        if rec["ready"] <= 0:
            return
        if priority is None:
            priority = self.line(session).top_priority()
        if rec["marker"] is None or priority > rec["marker"]:
            self.common.push(priority, [session])
            rec["marker"] = priority

    def opened(self, session: str, n: int = 1) -> None:
        """``n`` items of the session became pending or leased (``-n``: done or dead)."""
        self.record(session)["open"] += n

    def push(self, session: str, priority: int, item_id: str, now: float) -> None:
        """An item of the session is ready: to its bound worker while the binding lasts, else to anyone."""
        rec = self.record(session)
        self.line(session).push(priority, item_id)
        rec["ready"] += 1
        if self.bound(rec, now):
            self._hot(session, rec, True)
        else:
            self._free(session, rec, priority)

    def take_bound(self, worker: str, limit: int) -> list[str]:
        """Up to ``limit`` ready items of the sessions bound to ``worker`` (bindings' ends applied first)."""
        taken: list[str] = []
        for _, session in list(self.kv.scan(f"h/{_enc(worker)}/")):
            if len(taken) >= limit:
                break
            rec = self.record(session)
            got = self.line(session).take(limit - len(taken))
            rec["ready"] -= len(got)
            taken.extend(got)
            if rec["ready"] <= 0:
                self._hot(session, rec, False)
        return taken

    def take_free(self, session: str, worker: str, until: float, now: float) -> str | None:
        """The session's first ready item for ``worker``, whose claim reached an entry of it: binds it.

        An entry left behind (the session was taken through a higher one, or bound since) gives
        nothing to another worker than the bound one, and nothing once the session has no ready item.
        """
        rec = self.record(session)
        if self.bound(rec, now) and rec["worker"] != worker:  # not free: leave it to its worker
            return None
        rec["marker"] = None
        got = self.line(session).take(1)
        if not got:
            return None
        rec["ready"] -= 1
        self.bind(session, worker, until, now)
        self._hot(session, rec, rec["ready"] > 0)
        return got[0]

    def bind(self, session: str, worker: str, until: float, now: float) -> None:
        """``worker`` claimed or extended an item of the session, leased until ``until``."""
        rec = self.record(session)
        if rec["worker"] != worker:
            self._hot(session, rec, False)
            rec["worker"], rec["until"] = worker, 0.0
        rec["until"] = max(rec["until"], until, now + self.affinity)

    def lapse(self, now: float) -> None:
        """End every binding due at ``now``: its session's ready items go to the common lines."""
        meta = self.meta
        if meta["bind_check"] is None or now < meta["bind_check"]:
            return
        meta["bind_check"] = None
        for key, session in list(self.kv.scan("b/")):
            until = float(key.split("/", 2)[1])
            if until > now:
                meta["bind_check"] = until
                break
            self.kv.delete(key)
            rec = self.record(session)
            if rec["bkey"] != key:
                continue
            self._hot(session, rec, False)
            rec["worker"], rec["bkey"] = None, None
            self._free(session, rec, None)

    def heads(self) -> list[str]:
        """The first item of each line of each session with ready items (stored records: :meth:`save` first)."""
        out: list[str] = []
        for key, rec in self.kv.scan("s/"):
            if rec["ready"] > 0:
                out.extend(ReadyLines(self.kv, f"sl/{key[2:]}/").heads())
        return out

    def save(self) -> None:
        meta = self.meta
        for session, rec in self.records.items():
            key = "s/" + _enc(session)
            if rec["worker"] is None and rec["open"] <= 0 and rec["ready"] <= 0:
                if self.stored[session]:
                    self.kv.delete(key)
                    meta["sessions"] -= 1
                continue
            if rec["worker"] is not None:
                bkey = f"b/{_time(rec['until'])}/{_enc(session)}"
                if bkey != rec["bkey"]:
                    if rec["bkey"]:
                        self.kv.delete(rec["bkey"])
                    self.kv.put(bkey, session)
                    rec["bkey"] = bkey
                    meta["bind_check"] = _min(meta["bind_check"], float(bkey.split("/", 2)[1]))
            self.kv.put(key, rec)
            if not self.stored[session]:
                meta["sessions"] += 1
        for line in self.lines.values():
            line.save()
        self.records.clear()
        self.stored.clear()
        self.lines.clear()


class Step:
    """One operation's working set -- the store, the time, the counters, the common ready lines, the
    sessions it touches -- and the moves operations share; :meth:`save` writes it back, once."""

    def __init__(self, kv: KeyValue, now: float, policy: RetryPolicy, affinity: float) -> None:
        self.kv = kv
        self.now = now
        self.policy = policy
        self.meta = _load_meta(kv)
        self.ready = ReadyLines(kv)
        self.sessions = Sessions(kv, self.meta, self.ready, affinity)

    def move(self, item: dict[str, Any], state: str) -> None:
        count = self.meta["count"]
        count[item["state"]] -= 1
        count[state] += 1
        item["state"] = state
        item["since"] = self.now

    def max_attempts(self, item: dict[str, Any]) -> int:
        return item["max_attempts"] or self.policy.max_attempts

    def make_ready(self, item: dict[str, Any]) -> None:
        """Put a pending item where claims find it: the common lines, or its session's."""
        session = item.get("session")
        if session is None:
            self.ready.push(item["priority"], item["id"])
        else:
            self.sessions.push(session, item["priority"], item["id"], self.now)

    def bury(self, item: dict[str, Any]) -> None:
        self.move(item, "dead")
        meta = self.meta
        meta["dead"] += 1
        item["dead_seq"] = meta["dead"]
        self.kv.put(f"x/{_num(meta['dead'])}", item["id"])
        if item.get("session") is not None:
            self.sessions.opened(item["session"], -1)

    def lease(self, ids: list[str], until: float) -> str:
        """Record a lease of ``ids`` until ``until``: its key."""
        meta = self.meta
        meta["leases"] += 1
        key = f"l/{_time(until)}/{_num(meta['leases'])}"
        self.kv.put(key, {"ids": ids, "open": len(ids)})
        meta["lease_check"] = _min(meta["lease_check"], until)
        return key

    def extend(self, held: Iterable[tuple[str, int]], until: float) -> list[dict[str, Any]]:
        """Move each lease ``held`` (id, token) holds to a new lease record until ``until``; the outcomes
        (see :meth:`QueueLogic.extend_many`)."""
        outcomes: list[dict[str, Any]] = []
        extended: dict[str, dict[str, Any]] = {}  # each item once, however often it is listed
        moved: dict[str, int] = {}  # old lease key -> how many of its items move to the new one
        for item_id, token in held:
            item = extended.get(item_id) or self.kv.get("i/" + item_id)
            if item is None:
                outcomes.append({"id": item_id, "status": "unknown"})
                continue
            why = _refusal(item, token, self.now)
            if why is not None:
                outcomes.append(_lease_lost(item, token, "extend", why))
                continue
            if item_id not in extended:
                extended[item_id] = item
                moved[item["lease"]] = moved.get(item["lease"], 0) + 1
            outcomes.append({"id": item_id, "status": "extended", "token": token, "lease_until": until})
        if extended:
            self.release(moved)
            lease = self.lease(list(extended), until)
            for item_id, item in extended.items():
                item["lease_until"], item["lease"] = until, lease
                self.kv.put("i/" + item_id, item)
                if item.get("session") is not None:
                    self.sessions.bind(item["session"], item["worker"], until, self.now)
        return outcomes

    def release(self, finished: dict[str, int]) -> None:
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

    def catch_up(self) -> None:
        """Apply every lease expiry, backoff end and binding end due now (lazily: there is no timer)."""
        meta, now, kv = self.meta, self.now, self.kv
        if meta["lease_check"] is not None and now >= meta["lease_check"]:
            meta["lease_check"] = None
            for key, lease in list(kv.scan("l/")):
                until = float(key.split("/", 2)[1])
                if until > now:
                    meta["lease_check"] = until  # the scan is in time order: the earliest left
                    break
                kv.delete(key)
                for item_id in lease["ids"]:
                    item = kv.get("i/" + item_id)
                    if item["state"] != "leased" or item["lease"] != key:
                        continue  # finished, or its lease was extended (another entry holds it)
                    item["reason"] = f"lease expired (attempt {item['attempts']}, worker {item['worker']})"
                    item["lease_until"] = item["lease"] = None
                    if item["attempts"] >= self.max_attempts(item):
                        self.bury(item)
                    else:
                        self.move(item, "pending")
                        self.make_ready(item)
                    kv.put("i/" + item_id, item)
        if meta["wait_check"] is not None and now >= meta["wait_check"]:
            meta["wait_check"] = None
            for key, item_id in list(kv.scan("w/")):
                until = float(key.split("/", 2)[1])
                if until > now:
                    meta["wait_check"] = until
                    break
                kv.delete(key)
                item = kv.get("i/" + item_id)
                item["retry_at"] = None
                self.make_ready(item)
                kv.put("i/" + item_id, item)
        self.sessions.lapse(now)

    def pick(self, worker: str, limit: int, until: float) -> list[str]:
        """The ids a claim by ``worker`` takes: its bound sessions' first, then the common lines'."""
        sessions = self.sessions
        ids = sessions.take_bound(worker, limit) if self.meta["sessions"] else []
        bound = False
        while len(ids) < limit:
            entries = self.ready.take(limit - len(ids))
            if not entries:
                break
            for entry in entries:
                if isinstance(entry, str):
                    ids.append(entry)
                    continue
                got = sessions.take_free(entry[0], worker, until, self.now)  # a free session: now this worker's
                if got is not None:
                    ids.append(got)
                    bound = True
        if bound and len(ids) < limit:
            ids.extend(sessions.take_bound(worker, limit - len(ids)))
        return ids

    def save(self) -> None:
        self.sessions.save()
        self.ready.save()
        self.kv.put(_META, self.meta)


class QueueLogic:
    """One queue's operations over ``kv`` at times given by ``clock`` (see the module docstring).

    Make one per operation (the agent does, per message) or keep one: it holds nothing between
    calls but its collaborators.  ``affinity_seconds``: how long a session stays bound to the worker
    that last claimed or extended one of its items (beyond its leases).

    Keys: ``q/meta`` (counters), ``i/<id>`` (the item), the ready lines (:class:`ReadyLines`),
    ``l/<until>/<n>`` (the items leased by one claim until then: ``{"ids", "open"}``, ``open``
    counting those not yet finished), ``w/<until>/<id>`` (waiting out a backoff), ``dp/<page>``
    (completed, in completion order: :class:`ResultLog`), ``x/<seq>`` (dead, in order; a replay removes its item's) and
    the sessions' (:class:`Sessions`).
    """

    def __init__(self, kv: KeyValue, clock: Callable[[], float], policy: RetryPolicy | None = None,
                 affinity_seconds: float = 30.0, keep_results: bool = True, forget_after: float | None = None) -> None:
        if affinity_seconds < 0:
            raise ValueError("affinity_seconds cannot be negative")
        self.kv = kv
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.affinity_seconds = affinity_seconds
        self.keep_results = keep_results
        self.forget_after = checked_forget_after(forget_after)

    def _step(self) -> Step:
        return Step(self.kv, self.clock(), self.policy, self.affinity_seconds)

    def _item(self, item_id: str) -> dict[str, Any]:
        item = self.kv.get("i/" + item_id)
        if item is None:
            raise UnknownItem(f"no item {item_id!r} in this queue", item=item_id)
        return item

    # -- enqueue ---------------------------------------------------------------------------------

    def enqueue(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add items (``key``, ``payload``, ``priority``, ``max_attempts``, ``session``): one answer each, in order.

        An answer is ``{"id", "duplicate", "state", "attempts"}``; a duplicate changes nothing.
        """
        step = self._step()
        meta, now = step.meta, step.now
        answers = []
        for spec in items:
            key = spec["key"]
            existing = self.kv.get("i/" + key)
            if existing is not None:
                answers.append({"id": key, "duplicate": True, "state": existing["state"],
                                "attempts": existing["attempts"]})
                continue
            priority = int(spec.get("priority", 0))
            _inv(priority)  # checks the range before anything changes
            session = spec.get("session")
            meta["seq"] += 1
            item = {"id": key, "priority": priority, "payload": spec.get("payload"), "state": "pending",
                    "attempts": 0, "max_attempts": spec.get("max_attempts"), "seq": meta["seq"], "enqueued_at": now,
                    "since": now, "lease_until": None, "lease": None, "worker": None, "result": None,
                    "done_seq": None, "reason": None, "retry_at": None, "session": session}
            self.kv.put("i/" + key, item)
            meta["count"]["pending"] += 1
            if session is not None:
                step.sessions.opened(session)
            step.make_ready(item)
            answers.append({"id": key, "duplicate": False, "state": "pending", "attempts": 0})
        step.save()
        return answers

    # -- claim, extend ---------------------------------------------------------------------------

    def claim(self, worker: str, limit: int = 1, lease_seconds: float = 30.0) -> list[dict[str, Any]]:
        """Lease up to ``limit`` items to ``worker``: ``{"id", "token", "lease_until", "payload", "priority"}``
        each, and ``session`` for an item of one."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        step = self._step()
        step.catch_up()
        now = step.now
        until = now + lease_seconds
        ids = step.pick(worker, limit, until)
        claimed: list[dict[str, Any]] = []
        if ids:
            lease = step.lease(ids, until)
            for item_id in ids:
                item = self.kv.get("i/" + item_id)
                step.move(item, "leased")
                item["attempts"] += 1
                item["lease_until"] = until
                item["lease"] = lease
                item["worker"] = worker
                self.kv.put("i/" + item_id, item)
                answer = {"id": item_id, "token": _token(item), "attempt": item["attempts"], "lease_until": until,
                          "payload": item["payload"], "priority": item["priority"]}
                session = item.get("session")
                if session is not None:
                    step.sessions.bind(session, worker, until, now)
                    answer["session"] = session
                claimed.append(answer)
        step.save()
        return claimed

    def extend(self, item_id: str, token: int, lease_seconds: float = 30.0) -> dict[str, Any]:
        """Move the lease's end to ``now + lease_seconds``: ``{"id", "token", "lease_until"}``."""
        outcome = self.extend_many([(item_id, token)], lease_seconds)[0]
        _raise(outcome, item_id, token)
        return {"id": item_id, "token": token, "lease_until": outcome["lease_until"]}

    def extend_many(self, held: Iterable[tuple[str, int]], lease_seconds: float = 30.0) -> list[dict[str, Any]]:
        """Extend several leases to ``now + lease_seconds``, each on its own, under one new lease record:
        one outcome per ``(item, token)``, in order, ``status`` ``extended`` (with ``token`` and
        ``lease_until``), ``lease_lost`` (with ``error``, ``current_token``, ``state``) or ``unknown``."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        step = self._step()
        outcomes = step.extend(held, step.now + lease_seconds)
        step.save()
        return outcomes

    # -- complete, fail --------------------------------------------------------------------------

    def complete(self, item_id: str, token: int, result: Any = None) -> dict[str, Any]:
        """Record the item's result: ``{"id", "status": "completed" | "already_completed", "seq"}``.

        Raises :class:`LeaseLost` for a token that does not hold the lease, :class:`UnknownItem`.
        """
        outcome = self.complete_many([(item_id, token, result)])[0]
        _raise(outcome, item_id, token)
        return outcome

    def complete_many(self, completions: Iterable[tuple[str, int, Any]]) -> list[dict[str, Any]]:
        """Complete several items, each on its own: one outcome per ``(item, token, result)``, in order.

        ``status`` is ``completed``, ``already_completed`` (this token completed it before: nothing
        changed), ``lease_lost`` (with ``error``, ``current_token``, ``state``) or ``unknown``.
        Without ``keep_results``, each completed item is acked as it completes.
        """
        step = self._step()
        meta, now = step.meta, step.now
        outcomes = []
        finished: dict[str, int] = {}
        done = ResultLog(self.kv, meta)
        if not self.keep_results and meta["acked"] < meta["done"]:
            done.ack(meta["done"])  # results kept before the queue stopped keeping them
        for item_id, token, result in completions:
            item = self.kv.get("i/" + item_id)
            if item is None:
                outcomes.append({"id": item_id, "status": "unknown"})
                continue
            if item["state"] == "done" and _token(item) == token:
                outcomes.append({"id": item_id, "status": "already_completed", "seq": item["done_seq"]})
                continue
            why = _refusal(item, token, now)
            if why is not None:
                outcomes.append(_lease_lost(item, token, "complete", why))
                continue
            finished[item["lease"]] = finished.get(item["lease"], 0) + 1
            step.move(item, "done")
            item["done_seq"] = seq = done.append(item_id)
            if self.keep_results:
                item["result"] = result
            else:  # acked at once (invariant: ``acked`` was ``seq - 1``, see above)
                item["result"] = item["payload"] = None
                meta["acked"] = seq
            item["lease_until"] = item["lease"] = None
            self.kv.put("i/" + item_id, item)
            if item.get("session") is not None:
                step.sessions.opened(item["session"], -1)
            outcomes.append({"id": item_id, "status": "completed", "seq": seq})
        step.release(finished)
        self._forget(done, now, len(outcomes))
        done.save()
        step.save()
        return outcomes

    def _forget(self, done: ResultLog, now: float, size: int) -> None:
        """Forget what is due (module docstring), up to twice ``size`` numbers, at least a page."""
        if self.forget_after is not None:
            done.forget(now - self.forget_after, max(DONE_PAGE, 2 * size))

    def fail(self, item_id: str, token: int, reason: str = "", retry: bool = True) -> dict[str, Any]:
        """Give the item up: ``{"id", "state": "pending" | "dead", "attempts", "retry_at"}``.

        Raises :class:`LeaseLost` for a token that does not hold the lease, :class:`UnknownItem`.
        """
        outcome = self.fail_many([(item_id, token, reason, retry)])[0]
        _raise(outcome, item_id, token)
        return {key: outcome[key] for key in ("id", "state", "attempts", "retry_at")}

    def fail_many(self, failures: Iterable[tuple[str, int, str, bool]]) -> list[dict[str, Any]]:
        """Fail several items, each on its own: one outcome per ``(item, token, reason, retry)``, in order.

        ``status`` is ``failed`` (with ``state``: ``pending`` or ``dead``, ``attempts``, ``retry_at``),
        ``lease_lost`` (with ``error``, ``current_token``, ``state``: nothing changed) or ``unknown``.
        """
        step = self._step()
        meta, now = step.meta, step.now
        outcomes = []
        finished: dict[str, int] = {}
        for item_id, token, reason, retry in failures:
            item = self.kv.get("i/" + item_id)
            if item is None:
                outcomes.append({"id": item_id, "status": "unknown"})
                continue
            why = _refusal(item, token, now)
            if why is not None:
                outcomes.append(_lease_lost(item, token, "fail", why))
                continue
            finished[item["lease"]] = finished.get(item["lease"], 0) + 1
            item["lease_until"] = item["lease"] = None
            item["reason"] = reason
            retry_at = None
            if retry and item["attempts"] < step.max_attempts(item):
                step.move(item, "pending")
                retry_at = item["retry_at"] = now + self.policy.delay(item["attempts"])
                self.kv.put(f"w/{_time(retry_at)}/{item_id}", item_id)
                meta["wait_check"] = _min(meta["wait_check"], retry_at)
            else:
                step.bury(item)
            self.kv.put("i/" + item_id, item)
            outcomes.append({"id": item_id, "status": "failed", "state": item["state"], "attempts": item["attempts"],
                             "retry_at": retry_at})
        step.release(finished)
        step.save()
        return outcomes

    # -- an operator's ---------------------------------------------------------------------------

    def replay(self, items: Iterable[str] | None = None, limit: int = 100, who: str = "") -> dict[str, Any]:
        """Dead items back to pending: ``items`` by id, or (None) the oldest ``limit`` dead ones.

        Returns ``{"replayed": [{"id", "attempts", "replay_count"}, ...], "dead"}`` (``attempts``:
        before the replay; ``dead``: how many are left).  An unknown id (:class:`UnknownItem`) or
        an item that is not dead (:class:`QueueError`) refuses the whole request.
        """
        step = self._step()
        dead = DeadItems(step)
        chosen = dead.chosen(items) if items is not None else dead.oldest(limit)
        answer = dead.replay(chosen, who)
        step.save()
        return answer

    # -- reading ---------------------------------------------------------------------------------

    def item(self, item_id: str) -> dict[str, Any]:
        """The item's record as stored (``state``, ``attempts``, ``result``, ``reason``...)."""
        return self._item(item_id)

    def items(self, state: str | None = None, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """A page of items of ``state`` (None: every state) from cursor ``after``: see :meth:`Listing.page`.

        Applies due expiries first, as :meth:`stats` does.
        """
        if state is not None and state not in STATES:
            raise ValueError(f"no state {state!r}: one of {', '.join(STATES)}")
        if limit < 1:
            raise ValueError("limit must be positive")
        step = self._step()
        step.catch_up()
        step.save()
        return Listing(self.kv, step.meta, step.now).page(state, after, limit)

    def results(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """Completed items after cursor ``after``, in completion order (see :meth:`ResultLog.read`)."""
        return ResultLog(self.kv, _load_meta(self.kv)).read(after, limit)

    def ack(self, upto: int) -> dict[str, Any]:
        """Drop the results up to cursor ``upto`` (see :meth:`ResultLog.ack`)."""
        meta = _load_meta(self.kv)
        done = ResultLog(self.kv, meta)
        answer = done.ack(upto)
        self._forget(done, self.clock(), answer["dropped"])
        self.kv.put(_META, meta)
        return answer

    def stats(self) -> dict[str, Any]:
        """Count and age of the oldest item (seconds in that state) per state; ``depth`` = pending + leased.

        Applies due expiries first, so ``leased`` counts live leases only.
        """
        step = self._step()
        step.catch_up()
        step.save()
        now, meta = step.now, step.meta
        oldest = _oldest(self.kv, meta)
        count = meta["count"]
        out: dict[str, Any] = {
            state: {"count": count[state],
                    "oldest_age": None if oldest[state] is None else max(0.0, now - oldest[state])}
            for state in STATES
        }
        out["depth"] = count["pending"] + count["leased"]
        out["results_acked"] = meta["acked"]
        out["forgotten"] = meta["forgotten"]
        return out


class DeadItems:
    """The dead items' index (``x/<n>`` -> id, in the order they died, the first at ``dead_from``) and
    their replay (see :meth:`QueueLogic.replay`), inside one :class:`Step`."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.kv = step.kv
        self.meta = step.meta

    def _index(self) -> Iterator[tuple[int, str]]:
        return _numbered(self.kv, "x/", self.meta["dead_from"], self.meta["dead"])

    def oldest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` items that died first (and are dead still)."""
        chosen = []
        for _, item_id in self._index():
            if len(chosen) >= limit:
                break
            item = self.kv.get("i/" + item_id)
            if item["state"] == "dead":
                chosen.append(item)
        return chosen

    def chosen(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The items of ``ids`` (each once), if every one is dead; else the error, before any change."""
        chosen, seen = [], set()
        for item_id in ids:
            if item_id in seen:
                continue
            seen.add(item_id)
            item = self.kv.get("i/" + item_id)
            if item is None:
                raise UnknownItem(f"no item {item_id!r} in this queue", item=item_id)
            if item["state"] != "dead":
                raise QueueError(f"cannot replay item {item_id!r}: it is {item['state']}, and only dead items "
                                 "are replayed", item=item_id, state=item["state"])
            chosen.append(item)
        return chosen

    def _seq(self, item: dict[str, Any]) -> int | None:
        """The item's number in the index (looked up for an item buried before numbers were kept)."""
        if item.get("dead_seq"):
            return item["dead_seq"]
        return next((n for n, item_id in self._index() if item_id == item["id"]), None)

    def replay(self, items: list[dict[str, Any]], who: str) -> dict[str, Any]:
        step, kv = self.step, self.kv
        replayed = []
        for item in items:
            n = self._seq(item)
            if n is not None:
                kv.delete(f"x/{_num(n)}")
            record = {"at": step.now, "by": who, "attempts": item["attempts"], "reason": item["reason"]}
            item["replays"] = [*(item.get("replays") or []), record][-REPLAY_HISTORY:]
            item["replay_count"] = item.get("replay_count", 0) + 1
            item["token_base"] = _token(item)
            item["attempts"] = 0
            item["reason"] = item["dead_seq"] = item["retry_at"] = None
            step.move(item, "pending")
            if item.get("session") is not None:
                step.sessions.opened(item["session"])
            step.make_ready(item)
            kv.put("i/" + item["id"], item)
            replayed.append({"id": item["id"], "attempts": record["attempts"], "replay_count": item["replay_count"]})
        first = next(self._index(), None)
        self.meta["dead_from"] = self.meta["dead"] + 1 if first is None else first[0]
        return {"replayed": replayed, "dead": self.meta["count"]["dead"]}


def _row(item: dict[str, Any], now: float) -> dict[str, Any]:
    """An item as a listing shows it: no payload nor result (:meth:`QueueLogic.item` has them)."""
    leased = item["state"] == "leased"
    return {"id": item["id"], "state": item["state"], "priority": item["priority"], "attempts": item["attempts"],
            "token": _token(item), "session": item.get("session"), "worker": item["worker"],
            "age": max(0.0, now - item["enqueued_at"]), "in_state": max(0.0, now - item["since"]),
            "lease_left": max(0.0, item["lease_until"] - now) if leased else None,
            "retry_in": max(0.0, item["retry_at"] - now) if item.get("retry_at") is not None else None,
            "reason": item["reason"], "replays": item.get("replay_count", 0)}


class Listing:
    """Items page by page from the indexes (see the module docstring's **Listing**)."""

    def __init__(self, kv: KeyValue, meta: dict[str, Any], now: float) -> None:
        self.kv = kv
        self.meta = meta
        self.now = now

    def page(self, state: str | None, after: str | None, limit: int) -> dict[str, Any]:
        """``{"items", "cursor", "more"}``: up to ``limit`` items (see :func:`_row`) after cursor ``after``.

        ``cursor`` is where this page ended (``after`` if it is empty): pass it back for the next;
        ``more`` says whether another item was there when this page was read.
        """
        states = LISTED if state is None else (state,)
        at = json.loads(after) if after else None
        if at is not None and at[0] not in states:
            raise ValueError(f"cursor {after!r} is not one of a listing of {state or 'every state'}")
        start = states.index(at[0]) if at else 0
        rows: list[dict[str, Any]] = []
        cursor, more = after, False
        for st in states[start:]:
            for position, item in self._walk(st, at[1] if at and at[0] == st else None):
                if len(rows) >= limit:
                    more = True
                    break
                rows.append(_row(item, self.now))
                cursor = json.dumps([st, position], separators=(",", ":"))
            if more:
                break
        return {"items": rows, "cursor": cursor, "more": more}

    def _walk(self, state: str, after: list[Any] | None) -> Iterator[tuple[list[Any], dict[str, Any]]]:
        kv = self.kv
        if state == "leased":
            for key, lease in kv.scan("l/"):
                if after and key < after[0]:
                    continue
                for i, item_id in enumerate(lease["ids"]):
                    if after and key == after[0] and i <= after[1]:
                        continue
                    item = kv.get("i/" + item_id)
                    if item["state"] == "leased" and item["lease"] == key:
                        yield [key, i], item
        elif state in ("dead", "done"):
            start = after[0] + 1 if after else 1
            if state == "done":
                start = max(start, self.meta["forgotten"] + 1)
            numbered = (_numbered(kv, "x/", max(self.meta["dead_from"], start), self.meta["dead"]) if state == "dead"
                        else ResultLog(kv, self.meta).ids(start, self.meta["done"]))
            for n, item_id in numbered:
                item = kv.get("i/" + item_id)
                if item["state"] == state:
                    yield [n], item
        else:
            yield from self._pending(after)

    def _pending(self, after: list[Any] | None) -> Iterator[tuple[list[Any], dict[str, Any]]]:
        """The common lines (item entries), then each session's lines, then the items waiting out a backoff."""
        kv = self.kv
        phase = after[0] if after else "r"
        if phase == "r":
            for position, entry in ReadyLines(kv).walk(after[1:] if after else None):
                if isinstance(entry, str):
                    yield ["r", *position], kv.get("i/" + entry)
            after = None
        if phase in ("r", "s"):
            for key, rec in kv.scan("s/"):
                session = key[2:]
                if rec["ready"] <= 0 or (after and session < after[1]):
                    continue
                here = after[2:] if after and session == after[1] else None
                for position, entry in ReadyLines(kv, f"sl/{session}/").walk(here):
                    yield ["s", session, *position], kv.get("i/" + entry)
            after = None
        for key, item_id in kv.scan("w/"):
            if after is None or key > after[1]:
                yield ["w", key], kv.get("i/" + item_id)


class ResultLog:
    """Completed items in completion order, read by number from a cursor; owns the done index.

    The done index maps each completion number to its item id, a page of :data:`DONE_PAGE`
    numbers per key: ``dp/<page>`` -> ``{"first", "ids"}``, where ``ids[i]`` is the id of number
    ``first + i`` and page ``p`` holds numbers ``p * DONE_PAGE + 1`` to ``(p + 1) * DONE_PAGE``
    (``first`` is past the page's start only on the first page a queue wrote).  An operation writes
    each page it added to once (:meth:`save`), so a batch of completions costs a few puts, not one
    each.  Queues written before pages keep ``d/<seq>`` -> item id for the numbers below
    ``meta["done_paged"]``, read as before; nothing rewrites them.  The numbers up to
    ``meta["forgotten"]`` are gone, with their items (:meth:`forget`): nothing reads below it.
    """

    def __init__(self, kv: KeyValue, meta: dict[str, Any]) -> None:
        self.kv = kv
        self.meta = meta
        self._pages: dict[int, dict[str, Any] | None] = {}  # read (or begun) by this operation
        self._added: set[int] = set()  # pages this operation appended to: :meth:`save` writes them

    def _page(self, number: int) -> dict[str, Any] | None:
        if number not in self._pages:
            self._pages[number] = self.kv.get(f"dp/{_num(number)}")
        return self._pages[number]

    def append(self, item_id: str) -> int:
        """Number ``item_id`` as the next completion; its number."""
        meta = self.meta
        meta["done"] = n = meta["done"] + 1
        number = (n - 1) // DONE_PAGE
        page = self._page(number)
        if page is None:
            page = self._pages[number] = {"first": n, "ids": []}
        page["ids"].append(item_id)  # invariant: n == page["first"] + len(page["ids"]) - 1
        self._added.add(number)
        return n

    def save(self) -> None:
        for number in sorted(self._added):
            self.kv.put(f"dp/{_num(number)}", self._pages[number])
        self._added.clear()

    def ids(self, start: int, end: int) -> Iterator[tuple[int, str]]:
        """``(number, item id)`` of the completions ``start`` to ``end``, in order."""
        paged = self.meta["done_paged"]
        if start < paged:
            yield from _numbered(self.kv, "d/", start, min(end, paged - 1))
        n = max(start, paged, 1)
        while n <= end:
            page = self._page((n - 1) // DONE_PAGE)
            if page is None:  # not written: no completion has a number this high
                return
            first, ids = page["first"], page["ids"]
            for m in range(n, min(end, first + len(ids) - 1) + 1):
                yield m, ids[m - first]
            n = ((n - 1) // DONE_PAGE + 1) * DONE_PAGE + 1

    def read(self, after: int, limit: int) -> dict[str, Any]:
        """``{"items", "cursor"}``: up to ``limit`` completed items after ``after``.

        Each is ``{"id", "seq", "result", "attempts", "finished_at"}``; ``cursor`` is the last
        ``seq`` returned (``after`` when there is none): pass it back for the next page.
        """
        meta = self.meta
        start = max(after, meta["acked"]) + 1
        items, cursor = [], after
        for seq, item_id in self.ids(start, min(meta["done"], start + limit - 1)):
            item = self.kv.get("i/" + item_id)
            items.append({"id": item["id"], "seq": seq, "result": item["result"], "attempts": item["attempts"],
                          "finished_at": item["since"]})
            cursor = seq
        return {"items": items, "cursor": cursor}

    def ack(self, upto: int) -> dict[str, Any]:
        """Drop results (and payloads) up to cursor ``upto``; the items stay done, listed in completion
        order (the done index keeps their numbers): ``{"acked", "dropped"}``."""
        meta = self.meta
        upto = min(upto, meta["done"])
        dropped = 0
        for _, item_id in self.ids(meta["acked"] + 1, upto):
            item = self.kv.get("i/" + item_id)
            item["result"] = item["payload"] = None
            self.kv.put("i/" + item_id, item)
            dropped += 1
        meta["acked"] = max(meta["acked"], upto)
        return {"acked": meta["acked"], "dropped": dropped}

    def forget(self, before: float, budget: int) -> int:
        """Forget the acked completions that finished before ``before``, oldest first, at most
        ``budget`` numbers: each item's record, and its number (a ``d/`` key, or its page once the
        page's last number goes).  Advances ``meta["forgotten"]``; how many numbers it forgot."""
        meta, kv = self.meta, self.kv
        first = meta["forgotten"] + 1
        forgotten = 0
        for number, item_id in self.ids(first, min(meta["acked"], first + budget - 1)):
            item = kv.get("i/" + item_id)
            if item is not None:
                if item["since"] >= before:
                    break  # completion order is time order: the rest are younger
                if item["state"] == "done" and item.get("done_seq", number) == number:
                    kv.delete("i/" + item_id)
            if number < meta["done_paged"]:
                kv.delete(f"d/{_num(number)}")
            elif number % DONE_PAGE == 0:  # its page's last number: every number of the page is forgotten
                kv.delete(f"dp/{_num(number // DONE_PAGE - 1)}")
            meta["forgotten"] = number
            forgotten += 1
        return forgotten


def _oldest(kv: KeyValue, meta: dict[str, Any]) -> dict[str, float | None]:
    """When the oldest item of each state entered it (None: no item in that state)."""
    oldest: dict[str, float | None] = dict.fromkeys(STATES)
    pending = [e for e in ReadyLines(kv).heads() if isinstance(e, str)]
    if meta["sessions"]:
        pending.extend(Sessions(kv, meta, ReadyLines(kv), 0.0).heads())
    pending.extend(item_id for _, item_id in kv.scan("w/"))
    for item_id in pending:
        oldest["pending"] = _min(oldest["pending"], kv.get("i/" + item_id)["since"])
    for key, lease in kv.scan("l/"):
        for item_id in lease["ids"]:
            item = kv.get("i/" + item_id)
            if item["state"] == "leased" and item["lease"] == key:
                oldest["leased"] = _min(oldest["leased"], item["since"])
    if meta["done"] > meta["acked"]:
        _, item_id = next(ResultLog(kv, meta).ids(meta["acked"] + 1, meta["acked"] + 1))
        oldest["done"] = kv.get("i/" + item_id)["since"]
    if meta["count"]["dead"]:
        first = next(_numbered(kv, "x/", meta["dead_from"], meta["dead"]), None)
        if first is not None:
            oldest["dead"] = kv.get("i/" + first[1])["since"]
    return oldest
