"""The agent's LMDB environment: tables, atomic commits, journal and transitions.

One LMDB environment per agent, with named tables:

``data``         the agent's working state (user keys, msgpack values)
``dedup``        replies remembered for effectively-once delivery, by message
                 id (ids are time-ordered, so trimming walks from the start)
``dedup_keys``   the same for caller-chosen idempotency keys
``dedup_time``   index of ``dedup_keys`` by time, for trimming
``outbox``       messages to other agents not yet acknowledged, by (recipient, seq)
``outseq``       last sequence number used per recipient
``inseq``        where each sender stands (effectively-once): last seq applied, its time, the epoch that numbered it
``deadletters``  messages that could not be delivered or handled, by time-ordered id
``control``      the runtime's own durable flags and records: a pulled kill switch, a quarantine, the operator log
``ledger``       governed actions' intents and outcomes, and the gateway's durable state (``_ledger``)
``audit``        audit records not yet in the agent's audit log, keyed by their op's own seq
                 (a PUT with an empty key gets it; see ``_audit``)
``journal``      op records by sequence number: the rolling op buffer
``transitions``  one record per op on ``data``, append-only: the state-transition log
                 (its older part lives in segments in the checkpoint store, see ``_transitions``)
``meta``         identity, last sequence number, restore history, deferred ops (not journaled)

Bounds: each commit also deletes a bounded batch of old journal, transition,
dedup and dead-letter entries (see ``_retention``, which says what keeps each
table bounded).

Invariants:

* Every journaled op gets the next sequence number and is written to
  ``journal`` (and, for ``data``, to ``transitions``) in the same LMDB
  transaction as the change itself, so the journal never disagrees with the
  state it describes.
* ``meta[seq]`` is the sequence number of the last committed op.
* Housekeeping (trimming, see ``_retention``; writing ``meta``) is not
  journaled: replaying the journal over a checkpoint rebuilds the same
  user-visible state whether or not trims happened in between.
* Deferred ops (:meth:`LmdbStore.defer`: records of housekeeping, such as a shipped transition
  segment, that must not make a commit of their own) are kept in ``meta[deferred]`` until a
  commit carries them, ahead of its own ops, and deletes the key in the same transaction: each
  is committed once.  Replaying the journal drops those it finds already committed, so a
  restore from a checkpoint taken before they were carried commits none of them twice.
* Writers are serialized by ``_write_lock`` (LMDB serializes them too; the
  lock also keeps ``seq`` consistent).  Readers never wait for writers.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import lmdb
import msgpack

from ._codec import pack, unpack
from ._journal_tail import JournalTail
from ._retention import Retention
from .exceptions import Fenced, StateError

__all__ = ["DELETE", "DELETE_RANGE", "PUT", "JournalRecord", "LmdbStore", "Op"]

_DEFERRED_KEY = b"deferred"

PUT = 0
DELETE = 1
#: Delete every key in [key, value) -- one journal record for a whole range.
DELETE_RANGE = 2
JOURNALED = frozenset(
    {"data", "dedup", "dedup_keys", "dedup_time", "outbox", "outseq", "inseq", "deadletters", "control", "ledger",
     "audit"}
)
TABLES = (*sorted(JOURNALED), "journal", "transitions", "meta")
_U64 = struct.Struct(">Q")


class Op(NamedTuple):
    """One mutation of one key: what a handler's changes are made of."""

    table: str
    kind: int  # PUT or DELETE
    key: bytes
    value: bytes | None


class JournalRecord(NamedTuple):
    seq: int
    ts: float
    table: str
    kind: int
    key: bytes
    value: bytes | None


def seq_key(seq: int) -> bytes:
    return _U64.pack(seq)


class LmdbStore:
    """The agent's working state and its journal, in one LMDB environment."""

    def __init__(self, path: Path, *, agent_id: str, map_size: int, sync: bool, readonly: bool = False) -> None:
        self.path = path
        self.agent_id = agent_id
        try:
            if not readonly:
                path.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=len(TABLES) + 4,
                sync=sync,
                metasync=sync,
                readahead=False,
                max_readers=256,
                readonly=readonly,
                lock=not readonly,  # a read-only open is of a private copy
            )
            self._db = {name: self.env.open_db(name.encode(), create=not readonly) for name in TABLES}
            with self.env.begin(db=self._db["meta"]) as txn:
                raw = txn.get(b"seq")
        except (lmdb.Error, OSError) as exc:
            raise StateError(f"cannot open LMDB state at {path}: {exc}", path=str(path)) from exc
        self.seq = _U64.unpack(raw)[0] if raw else 0
        # Entries with seq <= these may be deleted (the deletes ride along with later commits, a few
        # at a time): journal (set by the checkpointer), transitions (once in shipped segments) and
        # audit records (once in the agent's audit log, see ``_audit``).
        self.trim_upto = self.transitions_trim_upto = self.audit_trim_upto = 0
        self.dedup_horizon = 600.0
        self.dead_letter_limit = 100_000
        self._retention = Retention(self._db)
        self._write_lock = threading.Lock()
        self._packer = msgpack.Packer(use_bin_type=True)  # used under _write_lock only
        #: This writer's fencing epoch (None: unfenced, e.g. a tool or a test).
        self.epoch: int | None = None
        #: Ops the next commit carries (``defer``); mirrored in ``meta[deferred]``.
        self._deferred = _load_deferred(self.get("meta", _DEFERRED_KEY))
        #: The journal records committed here and not yet shipped, for the shipper (``_journal``).
        self.tail = JournalTail()

    # -- reads (any thread) ------------------------------------------------

    def get(self, table: str, key: bytes) -> bytes | None:
        try:
            with self.env.begin(db=self._db[table], buffers=False) as txn:
                return txn.get(key)
        except lmdb.Error as exc:
            raise StateError(f"read of {table}/{key!r} failed: {exc}") from exc

    def scan(self, table: str, prefix: bytes = b"", *, start: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix`` (from ``start`` if given), in key order."""
        try:
            with self.env.begin(db=self._db[table]) as txn:
                cur = txn.cursor()
                out: list[tuple[bytes, bytes]] = []
                if not cur.set_range(start if start is not None else prefix):
                    return out
                rows = cur.iternext() if limit is None else itertools.islice(cur.iternext(), limit)
                for k, v in rows:
                    if not k.startswith(prefix):
                        break
                    out.append((k, v))
                return out
        except lmdb.Error as exc:
            raise StateError(f"scan of {table}/{prefix!r} failed: {exc}") from exc

    def count(self, table: str) -> int:
        with self.env.begin(db=self._db[table]) as txn:
            return txn.stat(self._db[table])["entries"]

    def meta(self, key: str, default: Any = None) -> Any:
        """A value :meth:`put_meta` wrote (not ``seq`` or ``epoch``: the store's own binary counters)."""
        raw = self.get("meta", key.encode())
        if raw is None:
            return default
        try:
            return unpack(raw)
        except Exception as exc:  # noqa: BLE001 - msgpack's errors, translated at the boundary
            raise StateError(f"metadata {key!r} is not a value put_meta wrote ({type(exc).__name__}: {exc})",
                             key=key) from exc

    def journal_since(self, after_seq: int) -> list[JournalRecord]:
        """Journal records with seq > after_seq, in order, decoded."""
        return [JournalRecord(seq, *unpack(raw)) for seq, raw in self.raw_since("journal", after_seq)]

    def transitions_window(self, after_seq: int = 0,
                           limit: int = 1000) -> tuple[int | None, list[dict[str, Any]]]:
        """From one snapshot: the first local seq (None: none) and up to ``limit`` records after ``after_seq``."""
        with self.env.begin(db=self._db["transitions"]) as txn:
            cur = txn.cursor()
            first = _U64.unpack(cur.key())[0] if cur.first() else None
            out: list[dict[str, Any]] = []
            if limit > 0 and cur.set_range(seq_key(after_seq + 1)):
                for k, v in cur:
                    out.append(transition_record(_U64.unpack(k)[0], v))
                    if len(out) >= limit:
                        break
            return first, out

    def raw_since(self, table: str, after_seq: int, upto: int | None = None,
                  limit: int | None = None) -> list[tuple[int, bytes]]:
        """``(seq, value)`` of a seq-keyed table (``journal``, ``transitions``, ``audit``) with
        ``after_seq < seq <= upto`` (no bound: None), at most ``limit``, in order and undecoded."""
        try:
            with self.env.begin(db=self._db[table]) as txn:
                cur = txn.cursor()
                out: list[tuple[int, bytes]] = []
                if not cur.set_range(seq_key(after_seq + 1)):
                    return out
                end = None if upto is None else seq_key(upto)
                for k, v in cur:
                    if (end is not None and k > end) or len(out) == limit:
                        break
                    out.append((_U64.unpack(k)[0], v))
                return out
        except lmdb.Error as exc:
            raise StateError(f"read of {table} failed: {exc}") from exc

    def db(self, table: str) -> Any:
        """The LMDB handle of ``table``, for reads in a transaction from :meth:`read_txn`."""
        return self._db[table]

    def read_txn(self) -> lmdb.Transaction:
        """A read-only snapshot; the caller aborts it."""
        return self.env.begin()

    # -- writes ---------------------------------------------------------------

    def commit(self, ops: Iterable[Op], *, now: float | None = None, trim: bool = True) -> int:
        """Apply ``ops`` atomically, journaling each; return the last seq (``trim=False``: no trimming
        in this one, for small commits between handlers', which trim)."""
        now = time.time() if now is None else now
        with self._write_lock:
            return self._commit(ops, now, trim)

    def defer(self, ops: Iterable[Op]) -> None:
        """Have the next commit carry ``ops`` ahead of its own (no commit of their own); kept in
        ``meta[deferred]`` meanwhile, so a crash on this disk loses none of them."""
        with self._write_lock:
            pending = [*self._deferred, *ops]
            try:
                with self.env.begin(write=True) as txn:
                    _save_deferred(txn, self._db["meta"], pending)
            except lmdb.Error as exc:
                raise StateError(f"metadata write failed: {exc}") from exc
            self._deferred = pending

    @property
    def deferred(self) -> int:
        """How many ops wait for a commit to carry them."""
        return len(self._deferred)

    def _commit(self, ops: Iterable[Op], now: float, trim: bool = True) -> int:
        carried = self._deferred
        if carried:
            ops = itertools.chain(carried, ops)
        # Plain tuples in JournalRecord's layout: a NamedTuple per op costs
        # more than the rest of the op's bookkeeping here.
        records = [
            (seq, now, table, kind, key, value) for seq, (table, kind, key, value) in enumerate(ops, self.seq + 1)
        ]
        seq = self.seq + len(records)
        journal = None
        try:
            with self.env.begin(write=True) as txn:
                if self.epoch is not None:
                    _check_epoch(txn, self._db["meta"], self.agent_id, self.epoch)
                if records:
                    journal = self._write(txn, records, append=True)
                if carried:
                    _save_deferred(txn, self._db["meta"], [])
                if trim:
                    self._retention.trim(txn, now, max(256, 2 * len(records)), journal_upto=self.trim_upto,
                                         transitions_upto=self.transitions_trim_upto, audit_upto=self.audit_trim_upto,
                                         dedup_horizon=self.dedup_horizon,
                                         dead_letter_limit=self.dead_letter_limit)
        except lmdb.Error as exc:
            raise StateError(f"commit failed: {exc}") from exc
        if journal:
            self.tail.add(self.seq + 1, journal)  # committed: the shipper may take them
        self.seq = seq
        if carried:
            self._deferred = []
        return seq

    def stamped_epoch(self) -> int:
        """The fencing epoch of the last host that took these files (0: none did)."""
        with self.env.begin() as txn:
            return _epoch_in(txn, self._db["meta"])

    def take_epoch(self, epoch: int) -> None:
        """Stamp these files with ``epoch``; later commits by an older epoch's writer are refused.

        Invariant: checked inside each write transaction (LMDB serialises
        writers, across processes too), so a stale process on the same files
        cannot commit after a newer one took them.
        """
        with self._write_lock:
            try:
                with self.env.begin(write=True) as txn:
                    self.epoch = epoch
                    _check_epoch(txn, self._db["meta"], self.agent_id, self.epoch)
                    txn.put(b"epoch", _U64.pack(epoch), db=self._db["meta"])
            except lmdb.Error as exc:
                raise StateError(f"cannot record epoch {epoch}: {exc}") from exc

    def replay(self, records: Iterable[JournalRecord]) -> int:
        """Apply shipped journal records with their original seqs; return how many applied.

        Invariant: a record with seq <= the current seq is already reflected and skipped,
        so replaying overlapping segments is harmless.
        """
        with self._write_lock:
            fresh = []
            seq = self.seq
            for rec in records:
                if rec.seq > seq:
                    fresh.append(rec)
                    seq = rec.seq
            if not fresh:
                return 0
            carried = {rec[5] for rec in fresh if rec[2] == "audit"} & {op.value for op in self._deferred}
            kept = [op for op in self._deferred if op.value not in carried]
            try:
                with self.env.begin(write=True) as txn:
                    self._write(txn, fresh, append=False)
                    if carried:  # committed before the copy restored from was taken: not again
                        _save_deferred(txn, self._db["meta"], kept)
            except lmdb.Error as exc:
                raise StateError(f"journal replay failed: {exc}") from exc
            self.seq = seq
            self._deferred = kept
            return len(fresh)

    def _write(self, txn: lmdb.Transaction, records: list[tuple[Any, ...]], *,
               append: bool) -> list[tuple[bytes, bytes]]:
        """Apply records (``JournalRecord``s or tuples in its layout) in order,
        then append their journal and transition entries; return the journal entries.

        Runs of puts to one table go through ``putmulti`` (one C loop), which
        is most of a commit's cost at high message rates.
        """
        db = self._db
        pack_ = self._packer.pack
        u64 = _U64.pack
        agent_id = self.agent_id
        journal = []
        transitions = []
        run: list[tuple[bytes, bytes]] = []
        run_table: str | None = None
        for seq, ts, table, kind, key, value in records:
            k = u64(seq)
            if not key and table == "audit":
                key = k  # an audit record is keyed by its own seq (``_audit``)
            journal.append((k, pack_([ts, table, kind, key, value])))
            if table == "data":
                transitions.append((k, pack_([ts, agent_id, table, kind, key])))
            if kind == PUT and table == run_table:
                run.append((key, value))  # type: ignore[arg-type]
                continue
            if run:
                txn.cursor(db=db[run_table]).putmulti(run)  # type: ignore[index]
                run = []
            if table not in JOURNALED:
                raise StateError(f"table {table!r} is not a journaled table")
            if kind == PUT:
                run_table, run = table, [(key, value)]  # type: ignore[list-item]
            else:
                run_table = None
                _apply(txn, db[table], kind, key, value)
        if run:
            txn.cursor(db=db[run_table]).putmulti(run)  # type: ignore[index]
        txn.cursor(db=db["journal"]).putmulti(journal, append=append)
        if transitions:
            txn.cursor(db=db["transitions"]).putmulti(transitions, append=append)
        txn.put(b"seq", _U64.pack(records[-1][0]), db=db["meta"])
        return journal

    def put_meta(self, key: str, value: Any) -> None:
        try:
            with self._write_lock, self.env.begin(write=True, db=self._db["meta"]) as txn:
                txn.put(key.encode(), pack(value))
        except lmdb.Error as exc:
            raise StateError(f"metadata write failed: {exc}") from exc

    def close(self) -> None:
        self.env.close()


def _apply(txn: lmdb.Transaction, db: Any, kind: int, key: bytes, value: bytes | None) -> None:
    """One op that is not part of a run of puts (``_write``): a put, a delete or a range delete."""
    if kind == PUT:
        txn.put(key, value, db=db)
    elif kind == DELETE:
        txn.delete(key, db=db)
    else:
        assert value is not None
        cur = txn.cursor(db=db)
        if cur.set_range(key):
            k = cur.key()
            while k and k < value and cur.delete():  # delete() moves to the next key
                k = cur.key()


def _epoch_in(txn: lmdb.Transaction, meta: Any) -> int:
    raw = txn.get(b"epoch", db=meta)
    return _U64.unpack(raw)[0] if raw is not None else 0


def _check_epoch(txn: lmdb.Transaction, meta: Any, agent_id: str, epoch: int) -> None:
    """Refuse a write by ``epoch`` to files a newer epoch took (``Fenced``)."""
    taken = _epoch_in(txn, meta)
    if taken > epoch:
        raise Fenced(f"agent {agent_id!r} epoch {epoch}: these files were taken by epoch {taken}; commit refused",
                     agent_id=agent_id, epoch=epoch, where="local state")


def _load_deferred(raw: bytes | None) -> list[Op]:
    return [Op(*op) for op in unpack(raw)] if raw else []


def _save_deferred(txn: lmdb.Transaction, meta: Any, ops: list[Op]) -> None:
    """Mirror the deferred ops in ``meta[deferred]``, in the caller's write transaction."""
    if ops:
        txn.put(_DEFERRED_KEY, pack([list(op) for op in ops]), db=meta)
    else:
        txn.delete(_DEFERRED_KEY, db=meta)


def transition_record(seq: int, raw: bytes) -> dict[str, Any]:
    """A user-facing transition record from its stored encoding."""
    ts, agent, table, kind, key = unpack(raw)
    return {"agent": agent, "seq": seq, "time": ts, "table": table,
            "op": "put" if kind == PUT else "delete", "key": key}


def dedup_time_key(ts: float, key: bytes) -> bytes:
    return _U64.pack(int(ts * 1e6)) + key
