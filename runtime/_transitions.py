"""The state-transition log: recent records in LMDB, older ones in segments in the checkpoint store.

Every op on ``data`` leaves one record in the local ``transitions`` table (in
the op's own transaction, see ``_store``).  At each checkpoint,
:meth:`TransitionLog.ship` moves the records up to the journal's shipped seq
into one *transition segment* in the checkpoint store, then lets the local
table drop them (the deletes ride along with later commits).  Readers
(:meth:`TransitionLog.read`, behind ``ref.admin.transitions``) see one ordered
history: segments for the older part, the local table for the rest.

Invariants:

* ``shipped`` is the highest seq held by the store's transition segments (up
  to each segment's epoch cut-off, see ``_ckstore.epoch_cutoff``), and the
  local table is trimmed only up to it: every record is in the local table,
  a segment, or both -- until retention deletes whole segments.
* Segments are immutable and append-only: written once, never rewritten or
  merged; each covers the records after the previous one, up to what the
  store held at the time (checkpoint, shipped journal).  With the audit log
  on, each stored segment becomes a ``segment`` audit record (its range,
  epoch, record count and SHA-256), carried by the agent's next commit
  (``LmdbStore.defer``), which the checkpointer makes before its copy
  (``_checkpoint``): a segment costs no checkpoint of its own; a crash
  between storing a segment and deferring its record (two writes in a row)
  loses that one record, never the segment.
* Retention: segments whose newest record is older than
  ``transition_retention`` seconds are deleted, whole and oldest first.
  Bounds: locally, about one checkpoint interval of records; in the store,
  ``transition_retention`` seconds of them (about 60 bytes per op on ``data``).
* Forks: what an epoch wrote past a newer epoch's restore point is never
  read back (the same cut-off as journal replay, see ``_restore``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ._ckstore import CheckpointStore, SegmentInfo, epoch_cutoff
from ._codec import unpack
from ._store import LmdbStore, transition_record

__all__ = ["SEGMENT_RECORDS", "TransitionLog", "decode_transitions", "encode_transitions"]

#: Most records in one segment (about 7 MB): a shipment of a long interval at a
#: high rate becomes several segments, never one list of millions in memory.
SEGMENT_RECORDS = 100_000


def encode_transitions(records: list[tuple[int, bytes]]) -> bytes:
    """A transition segment is ``[[seq, record], ...]``: the local table's own bytes."""
    return msgpack.packb(records, use_bin_type=True)


def decode_transitions(payload: bytes) -> list[tuple[int, bytes]]:
    return [(seq, raw) for seq, raw in msgpack.unpackb(payload, raw=False)]


class TransitionLog:
    """Ships transition records to the store and reads the whole history back; thread-safe."""

    def __init__(self, store: LmdbStore, ckstore: CheckpointStore, agent_id: str, *,
                 retention: float, epoch: int = 0, fence: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, segment_records: int = SEGMENT_RECORDS,
                 on_shipped: Callable[[SegmentInfo, int, bytes], None] | None = None) -> None:
        self.segment_records = segment_records
        self.on_shipped = on_shipped  # told of each segment stored: info, records, payload (``_audit``)
        self.store = store
        self.ckstore = ckstore
        self.agent_id = agent_id
        self.retention = retention
        self.epoch = epoch  # stamped on every segment
        self.fence = fence  # raises once a later incarnation exists: it ships nothing more
        self.clock = clock
        self._lock = threading.Lock()
        cutoff = epoch_cutoff(ckstore.bases(agent_id))
        self.shipped = int(max((min(s.last, cutoff(s.epoch)) for s in ckstore.list_transitions(agent_id)),
                               default=0))
        self.shipments = 0
        store.transitions_trim_upto = max(store.transitions_trim_upto, self.shipped)

    def ship(self, upto: int) -> int:
        """Ship the local records with seq <= ``upto`` not shipped yet, apply retention; return ``shipped``.

        ``upto`` is what the store already holds (a checkpoint's seq, the
        journal's shipped seq): it never holds a transition whose op it could lose.
        """
        with self._lock:
            while records := self.store.raw_since("transitions", self.shipped, upto, self.segment_records):
                # Named by the newest record's own time: a retry writes the same name and bytes.
                info = SegmentInfo(records[0][0], records[-1][0], unpack(records[-1][1])[0], self.epoch)
                if self.fence is not None:
                    self.fence("transition shipping")
                payload = encode_transitions(records)
                self.ckstore.put_transitions(self.agent_id, info, payload)
                self.shipped = info.last
                if self.on_shipped is not None:
                    self.on_shipped(info, len(records), payload)
                self.shipments += 1
            # Seqs up to ``upto`` without a record (ops on other tables) need no shipping either.
            self.shipped = max(self.shipped, min(upto, self.store.seq))
            self.store.transitions_trim_upto = max(self.store.transitions_trim_upto, self.shipped)
            self._expire()
            return self.shipped

    def _expire(self) -> None:
        horizon = self.clock() - self.retention
        for seg in self.ckstore.list_transitions(self.agent_id):
            if seg.last_time >= horizon:
                break  # oldest first: only a prefix of the history ever goes
            self.ckstore.delete_transitions(self.agent_id, seg)

    def read(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` transition records after ``after_seq``, in seq order, wherever they are kept.

        The local table is read first, from one snapshot: whatever it no longer
        holds was shipped before it was trimmed, so the segments cover the
        gap below its first record.
        """
        first, local = self.store.transitions_window(after_seq, limit)
        if first is not None and first <= after_seq + 1:
            return local
        below = first if first is not None else self.store.seq + 1
        out = self._from_segments(after_seq, below, limit)
        return out + local[: limit - len(out)]

    def _from_segments(self, after_seq: int, below: int, limit: int) -> list[dict[str, Any]]:
        """Records with ``after_seq < seq < below`` from the store's segments (none past its epoch's cut-off)."""
        cutoff = epoch_cutoff(self.ckstore.bases(self.agent_id))
        out: list[dict[str, Any]] = []
        last = after_seq
        for seg in self.ckstore.list_transitions(self.agent_id):
            if len(out) >= limit or seg.first >= below:
                break
            if seg.last <= last:
                continue
            limit_seq = min(cutoff(seg.epoch), below - 1)
            for seq, raw in decode_transitions(self.ckstore.read_transitions(self.agent_id, seg)):
                if seq <= last:
                    continue
                if seq > limit_seq or len(out) >= limit:
                    break
                out.append(transition_record(seq, raw))
                last = seq
        return out
