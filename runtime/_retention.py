"""Retention: what each commit deletes so the agent's LMDB tables stay bounded.

Bounds (what keeps each table of ``_store`` from growing with the message count):

* ``journal``: entries up to ``trim_upto`` (set by the checkpointer: covered by
  the previous checkpoint, shipped, older than ``journal_retention``) are deleted.
* ``transitions``: entries up to ``transitions_trim_upto`` (set once they are in
  shipped transition segments, see ``_transitions``) are deleted, so locally
  about one checkpoint interval of them is kept.
* ``audit``: entries up to ``audit_trim_upto`` (set once they are in the agent's
  audit log, see ``_audit``) are deleted: locally about one ship interval of them.
* ``dedup``, ``dedup_keys``, ``dedup_time``: entries older than ``dedup_horizon``.
* ``deadletters``: at most ``dead_letter_limit`` entries, the oldest go first.
* ``outbox``: what was staged and not yet acknowledged (deleted on each
  acknowledgement; by the recipients' lag, see ``_outbox``);
  ``outseq``/``inseq``: one entry per peer.
* ``meta``: a fixed set of keys; the restore history keeps ``restore_history`` reports.

Each commit deletes up to ``max(256, 2 * ops in the commit)`` trimmable entries
per table (the ``budget``), so trimming keeps up with any commit rate (old
entries go a batch at a time, never in one long transaction).

Invariant: trimming is housekeeping, not journaled: replaying the journal over
a checkpoint rebuilds the same user-visible state whether or not trims
happened in between.
"""

from __future__ import annotations

import struct
from typing import Any

import lmdb

__all__ = ["Retention"]

_U64 = struct.Struct(">Q")


class Retention:
    """Deletes old entries of the store's tables a bounded batch at a time, inside its commits.

    Only the store's writer calls it (under the store's write lock).
    """

    def __init__(self, db: dict[str, Any]) -> None:
        self._db = db
        self._journal_done = 0  # journal entries up to this seq are gone
        self._transitions_done = 0  # the same for transition records
        self._audit_done = 0  # and for audit records

    def trim(self, txn: lmdb.Transaction, now: float, budget: int, *, journal_upto: int, transitions_upto: int,
             dedup_horizon: float, dead_letter_limit: int, audit_upto: int = 0) -> None:
        """Delete up to ``budget`` old entries per table in ``txn`` (see module docstring for what is old)."""
        if journal_upto > self._journal_done and self._trim_seqs(txn, "journal", journal_upto, budget):
            self._journal_done = journal_upto
        if transitions_upto > self._transitions_done and self._trim_seqs(
                txn, "transitions", transitions_upto, budget):
            self._transitions_done = transitions_upto
        if audit_upto > self._audit_done and self._trim_seqs(txn, "audit", audit_upto, budget):
            self._audit_done = audit_upto
        horizon_ms = int((now - dedup_horizon) * 1000)
        cur = txn.cursor(db=self._db["dedup"])
        if cur.first():
            for _ in range(budget):
                k = cur.key()
                if not k or int.from_bytes(k[:6], "big") >= horizon_ms:  # message ids start with their time
                    break
                cur.delete()
        cur = txn.cursor(db=self._db["dedup_time"])
        if cur.first():
            for _ in range(budget):
                k = cur.key()
                if not k or _U64.unpack(k[:8])[0] // 1000 >= horizon_ms:
                    break
                txn.delete(k[8:], db=self._db["dedup_keys"])
                cur.delete()
        excess = txn.stat(self._db["deadletters"])["entries"] - dead_letter_limit
        if excess > 0:
            cur = txn.cursor(db=self._db["deadletters"])
            if cur.first():
                for _ in range(min(excess, budget)):
                    if not cur.delete():
                        break

    def _trim_seqs(self, txn: lmdb.Transaction, table: str, upto: int, budget: int) -> bool:
        """Delete up to ``budget`` entries of a seq-keyed table with seq <= ``upto``; True once none is left."""
        cur = txn.cursor(db=self._db[table])
        if not cur.first():
            return True
        end = _U64.pack(upto)  # big-endian keys: byte order is seq order
        key, delete = cur.key, cur.delete
        for _ in range(budget):
            k = key()
            if not k or k > end:
                return True
            delete()
        return False
