"""The side-effect ledger: one intent and one outcome per governed action, in the agent's LMDB.

The gateway (``_gateway``) writes an **intent** (the action's tag, its
arguments and their digest, the idempotency key, whether the tool is
idempotent) and commits it *before* the tool is called, then the
**outcome** (a :class:`governance.Outcome`) once the call returns.  Both are
their own LMDB commits, independent of the handler's transaction: the side
effect happened whether or not the handler's changes commit, so the record of
it must stand either way.  They are journaled like every table, so they ship
with the journal and survive the node.

Table ``ledger``, keys (``key`` is the action's idempotency key)::

    i/<key>     intent   {"key", "tag", "args", "digest", "idempotent", "at", "agent_id"}
    o/<key>     outcome  Outcome.model_dump(mode="json") plus "at"
    t/<at>/<key>  the intents in time order (``at`` in ns, big-endian), for retention
    s/<name>    the gateway's durable governance state (breakers, budget, review counter),
                written in the same commit as the outcome that changed it

**Retention.** :meth:`trim` deletes the entries whose intent is older than
``AgentConfig.ledger_retention`` *and* that have their outcome, oldest
first, a batch at a time; the gateway calls it after handlers, at most once
per ``TRIM_EVERY`` seconds.  An intent in doubt is kept until it has an
outcome.  Within the retention a redelivered message or a resumed approval
gets its recorded outcome back; past it, the same key would act again, so
the retention must exceed the longest redelivery horizon and approval time to
live (a week by default).

**Deferred outcomes.** The outcome of an *idempotent* action is not
committed on its own: it is kept (``_pending``) and rides with the ledger's
next commit (the next action's intent) or with :meth:`flush`, which the
invoker calls when the handler returns, before the handler's changes commit.
A crash before that loses only the record, never the effect's safety: the
message is redelivered, the intent is found without an outcome, and an
idempotent tool is called again with the same idempotency key (``_gateway``).
A non-idempotent action's outcome always commits at once.  So a handler's run
of idempotent actions costs one commit per action, not two.

**Audit.** With ``audited`` (the agent keeps an audit log), each intent and
outcome is also an ``intent`` / ``outcome`` audit record (``_audit``) in the
same commit: the key, tag, arguments and their digest; the outcome as recorded.

Invariants: an outcome is written at most once per key (the gateway looks
the key up before it acts, on the agent's one handling thread); an intent without an outcome is an
action *in doubt* (the process died during the call), which the gateway never
blindly repeats (see ``_gateway``).  ``_open`` holds exactly the keys with an
intent and no outcome: found by one scan when the ledger is opened, then kept
by ``intent`` and ``outcome``, so ``status()`` counts them without a scan.
Entries are kept until :meth:`trim` removes them (above).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import lmdb

from ._audit import audit_op
from ._codec import pack, unpack
from ._store import DELETE, PUT, LmdbStore, Op
from .exceptions import StateError

__all__ = ["Ledger"]

TABLE = "ledger"
#: Seconds between two retention passes (``trim``), and entries deleted per pass at most.
TRIM_EVERY = 10.0
TRIM_BATCH = 256
_NS = struct.Struct(">Q")


def _time_key(at: float, key: str) -> bytes:
    return b"t/" + _NS.pack(int(at * 1e9)) + b"/" + key.encode()


class Ledger:
    """Intents and outcomes of one agent's governed actions (see module docstring)."""

    def __init__(self, store: LmdbStore, *, agent_id: str, audited: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.agent_id = agent_id
        self._audited = audited  # each intent and outcome also an audit record, in the same commit
        self._clock = clock
        # Deferred outcomes by key, and the governance state they changed (last value per name).
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_state: dict[str, Any] = {}
        # One scan per prefix, keys only: no read per entry (a ledger holds up to a retention's worth).
        intents = {k[2:] for k, _ in self._store.scan(TABLE, b"i/")}
        self._open: set[str] = {k.decode() for k in intents - {k[2:] for k, _ in self._store.scan(TABLE, b"o/")}}
        self.index()

    # -- writes: each commit also carries the deferred outcomes ----------------------------

    def intent(self, key: str, *, tag: str, args: dict[str, Any], digest: str, idempotent: bool,
               state: Iterable[tuple[str, Any]] = ()) -> dict[str, Any]:
        """Commit the intent to call a tool for ``key`` (with the ``state`` its admission changed, such
        as a budget reservation, and the deferred outcomes): before the call, never after."""
        record = {"key": key, "tag": tag, "args": args, "digest": digest, "idempotent": idempotent,
                  "at": self._clock(), "agent_id": self.agent_id}
        ops = [Op(TABLE, PUT, b"i/" + key.encode(), pack(record)), Op(TABLE, PUT, _time_key(record["at"], key), b"")]
        if self._audited:
            ops.append(audit_op("intent", {k: record[k] for k in ("key", "tag", "args", "digest", "idempotent")},
                                record["at"]))
        self._commit(ops, state)
        self._open.add(key)
        return record

    def outcome(self, key: str, outcome: dict[str, Any], state: Iterable[tuple[str, Any]] = (), *,
                defer: bool = False) -> None:
        """Record ``key``'s outcome with the governance ``state`` it changed: committed now, or with
        ``defer`` (an idempotent action's; see module docstring) with the next commit.

        The caller (the gateway, on the agent's one handling thread) has looked
        ``key`` up first and found no outcome: that is what keeps it to one.
        """
        record = {**outcome, "at": self._clock()}
        self._open.discard(key)
        if defer:
            self._pending[key] = record
            self._pending_state.update(state)
            return
        self._commit(self._outcome_ops(key, record), state)

    def _outcome_ops(self, key: str, record: dict[str, Any]) -> list[Op]:
        ops = [Op(TABLE, PUT, b"o/" + key.encode(), pack(record))]
        if self._audited:
            ops.append(audit_op("outcome", {"key": key, **{k: v for k, v in record.items() if k != "at"}},
                                record["at"]))
        return ops

    def save(self, state: Iterable[tuple[str, Any]]) -> None:
        """Commit governance state on its own (a refusal that changed a breaker's window, say)."""
        state = list(state)
        if state or self._pending:
            self._commit([], state)

    def flush(self) -> None:
        """Commit the deferred outcomes, if any (the invoker, when a handler returns)."""
        if self._pending or self._pending_state:
            self._commit([], ())

    def trim(self, now: float, retention: float, *, batch: int = TRIM_BATCH) -> int:
        """Delete up to ``batch`` entries with an outcome whose intent is older than ``retention``; how many.

        Only entries with a ``t/`` index are seen (:meth:`index`, run when the ledger opens, gives
        one to those written before it existed).
        """
        horizon = _NS.pack(int(max(0.0, now - retention) * 1e9))
        doomed: list[str] = []
        for tkey, _ in self._store.scan(TABLE, b"t/", limit=batch + len(self._open)):
            if tkey[2:10] >= horizon:
                break
            key = tkey[11:].decode()
            if key in self._open or key in self._pending:
                continue  # in doubt, or its outcome not committed yet: kept
            doomed.append(key)
            if len(doomed) >= batch:
                break
        if not doomed:
            return 0
        ops = []
        for key in doomed:
            intent, _ = self.get(key)
            k = key.encode()
            ops += [Op(TABLE, DELETE, b"i/" + k, None), Op(TABLE, DELETE, b"o/" + k, None)]
            if intent is not None:
                ops.append(Op(TABLE, DELETE, _time_key(intent["at"], key), None))
        self._commit(ops, ())
        return len(doomed)

    def index(self) -> int:
        """Give every intent without one its ``t/`` entry (a ledger written before the index); how many."""
        indexed = {k[11:] for k, _ in self._store.scan(TABLE, b"t/")}
        ops = [Op(TABLE, PUT, _time_key(r["at"], r["key"]), b"")
               for k, r in ((k, unpack(v)) for k, v in self._store.scan(TABLE, b"i/")) if k[2:] not in indexed]
        if ops:
            self._commit(ops, ())
        return len(ops)

    def _commit(self, ops: list[Op], state: Iterable[tuple[str, Any]]) -> None:
        """One LMDB commit: the deferred outcomes and state first, then ``ops`` and ``state``."""
        pending, pending_state = self._pending, self._pending_state
        if pending or pending_state:
            head = [op for k, r in pending.items() for op in self._outcome_ops(k, r)]
            head.extend(Op(TABLE, PUT, b"s/" + n.encode(), pack(v)) for n, v in pending_state.items())
            ops = head + ops
        ops.extend(Op(TABLE, PUT, b"s/" + name.encode(), pack(value)) for name, value in state)
        self._store.commit(ops, trim=False)
        self._pending, self._pending_state = {}, {}  # only once committed: a failed commit keeps them

    # -- reads -------------------------------------------------------------------------

    def get(self, key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(intent, outcome)`` for ``key``; either may be None (one read snapshot for both; a deferred
        outcome counts)."""
        k = key.encode()
        try:
            txn = self._store.read_txn()
            try:
                db = self._store.db(TABLE)
                intent, outcome = txn.get(b"i/" + k, db=db), txn.get(b"o/" + k, db=db)
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise StateError(f"agent {self.agent_id}: reading the ledger failed: {exc}") from exc
        deferred = self._pending.get(key)  # one read: the handling thread may replace the dict
        if outcome is None and deferred is not None:
            return (None if intent is None else unpack(intent)), deferred
        return (None if intent is None else unpack(intent)), (None if outcome is None else unpack(outcome))

    def state(self, name: str, default: Any = None) -> Any:
        pending = self._pending_state
        if name in pending:
            return pending[name]
        raw = self._store.get(TABLE, b"s/" + name.encode())
        return default if raw is None else unpack(raw)

    def states(self, prefix: str) -> dict[str, Any]:
        """Every piece of governance state whose name starts with ``prefix``, by name."""
        found = {k[2:].decode(): unpack(v) for k, v in self._store.scan(TABLE, b"s/" + prefix.encode())}
        found.update((n, v) for n, v in self._pending_state.items() if n.startswith(prefix))
        return found

    def entries(self, *, limit: int = 100, tag: str | None = None) -> list[dict[str, Any]]:
        """Intents with their outcomes (None while in doubt), oldest first, at most ``limit``."""
        out: list[dict[str, Any]] = []
        for _, raw in self._store.scan(TABLE, b"i/"):
            intent = unpack(raw)
            if tag is not None and intent["tag"] != tag:
                continue
            out.append({**intent, "outcome": self.get(intent["key"])[1]})
        out.sort(key=lambda e: e["at"])
        return out[-limit:] if limit else out

    def in_doubt(self) -> list[dict[str, Any]]:
        """Intents without an outcome (a call in flight, or one a crash interrupted), oldest first."""
        found = [{**self.get(key)[0], "outcome": None} for key in self._open]  # type: ignore[dict-item]
        return sorted(found, key=lambda e: e["at"])

    def in_doubt_count(self) -> int:
        """How many intents have no outcome (no read: see the invariant on ``_open``)."""
        return len(self._open)
