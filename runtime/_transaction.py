"""A handler's transaction: the one object its state changes, sends and records flow through.

The inbox opens it (:meth:`Transaction.begin`) for one message, one hook or
one batch; the handler changes state through ``state`` and sends through
:meth:`Transaction.send` (the target of the ``current_stage`` context
variable that ``Agent.send`` and ``AgentRef.tell`` use inside a handler); the
inbox adds what must be committed with it (:meth:`Transaction.record`: the
effectively-once reply, where a sender's pair stands, a batch's dead
letters); the committer gets it all from :meth:`Transaction.take`.  The
governed-actions gateway and its ledger plug in here.

Invariants: what was changed, staged or recorded between ``begin`` and
``take`` is committed in one LMDB transaction, or none of it is (``discard``);
a savepoint rolls back state, sends *and* records made after it.  One
transaction per host, reused: the handling thread runs one at a time.
"""

from __future__ import annotations

from typing import Any

from ._state import Layer, State
from ._store import Op

__all__ = ["Transaction"]


class Transaction:
    """One handler call's (or hook's, or batch's) changes (see module docstring)."""

    __slots__ = ("records", "send", "state")

    def __init__(self, state: State) -> None:
        self.state = state
        self.records: list[Op] = []
        #: Stage an outgoing message: it leaves only if this transaction commits.  One
        #: bound method for the host's life, so "is it the current stage?" is an identity check.
        self.send = state.stage_send

    def begin(self, read_txn: Any = None) -> None:
        """Open: reads of committed state go through ``read_txn`` (an LMDB snapshot) when given."""
        self.state.begin(read_txn)
        if self.records:
            self.records = []

    def record(self, op: Op) -> None:
        """An op committed with this transaction's changes (and dropped with them)."""
        self.records.append(op)

    def savepoint(self) -> tuple[tuple[int, int], int]:
        return self.state.savepoint(), len(self.records)

    def release(self) -> None:
        self.state.release()

    def rollback(self, point: tuple[tuple[int, int], int]) -> None:
        self.state.rollback(point[0])
        del self.records[point[1] :]

    def is_open(self) -> bool:
        return self.state.depth() > 0

    def discard(self) -> None:
        """Drop everything since ``begin``."""
        self.state.discard()
        self.records = []

    def take(self) -> tuple[Layer, list[Op]]:
        """Close it: the state layer (ops and sends) and the records, for the committer."""
        layer = self.state.take()
        records, self.records = self.records, []
        return layer, records
