"""Shipping the journal (the rolling op buffer) to the checkpoint store.

A segment is every journal record committed since the last shipment, taken
from the store's in-memory tail of recent commits (``_journal_tail``) or, when
that does not reach back far enough, read from one LMDB snapshot: either way
whole transactions, so a segment never splits one.  Segments
are named by their first and last sequence numbers.

Invariant: ``shipped`` is the highest seq durably in the store, and the
segments in the store cover ``1..shipped`` without gaps, except below the
trim horizon (records covered by a checkpoint and past retention).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import msgpack

from ._ckstore import CheckpointStore, SegmentInfo, epoch_cutoff
from ._store import JournalRecord, LmdbStore

__all__ = ["Shipper", "decode_segment", "encode_segment"]


def encode_segment(records: list[tuple[int, bytes]]) -> bytes:
    """A segment is ``[[seq, journal value], ...]``: the journal's own bytes, not re-encoded."""
    return msgpack.packb(records, use_bin_type=True)


def decode_segment(payload: bytes) -> list[JournalRecord]:
    out = []
    for seq, raw in msgpack.unpackb(payload, raw=False):
        ts, table, kind, key, value = msgpack.unpackb(raw, raw=False)
        out.append(JournalRecord(seq, ts, table, kind, key, value))
    return out


class Shipper:
    """Moves new journal records into the checkpoint store; thread-safe."""

    def __init__(self, store: LmdbStore, ckstore: CheckpointStore, agent_id: str,
                 fence: Callable[[str], None] | None = None, epoch: int = 0,
                 on_shipped: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.on_shipped = on_shipped  # told the new ``shipped`` after each shipment
        self.fence = fence  # raises once a later incarnation exists: it ships nothing more
        self.epoch = epoch  # stamped on every segment (see _restore: cut-offs by epoch)
        self.ckstore = ckstore
        self.agent_id = agent_id
        self._lock = threading.Lock()
        # Shipped so far: what the segments hold, up to their epoch's cut-off (an
        # older epoch's fork past a newer base does not count: it was never restored).
        cutoff = epoch_cutoff(ckstore.bases(agent_id))
        self.shipped = int(max((min(s.last, cutoff(s.epoch)) for s in ckstore.list_segments(agent_id)), default=0))
        self.shipments = 0

    def ship(self) -> int:
        """Ship everything committed so far; return the highest shipped seq.

        ``on_shipped`` hears the result every time, even when there was nothing
        new: whoever waits on a seq may have started waiting after it shipped.
        """
        shipped = self._ship()
        if self.on_shipped is not None:
            self.on_shipped(shipped)
        return shipped

    def _ship(self) -> int:
        with self._lock:
            if self.store.seq <= self.shipped:
                return self.shipped
            records = self.store.tail.since(self.shipped)
            if records is None:
                records = self.store.raw_since("journal", self.shipped)
            if not records:
                return self.shipped
            info = SegmentInfo(records[0][0], records[-1][0], time.time(), self.epoch)
            if self.fence is not None:
                self.fence("journal shipping")
            try:
                self.ckstore.put_segment(self.agent_id, info, encode_segment(records))
            except BaseException:
                self.store.tail.forget()  # the store is down: read LMDB once it is back, hold nothing meanwhile
                raise
            if self.fence is not None:
                # Checked again after the write: a later incarnation that claimed its
                # epoch meanwhile may not have seen this segment, so it does not count
                # as shipped (nothing waiting on it, e.g. a SYNC reply, goes out).
                self.fence("journal shipping")
            self.shipped = info.last
            self.shipments += 1
            return self.shipped

    def ship_until(self, seq: int, deadline: float | None = None) -> None:
        """Block until ``seq`` is shipped (SYNC durability); ships at least once."""
        while self.ship() < seq:
            if deadline is not None and time.time() > deadline:
                break
