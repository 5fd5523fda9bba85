"""The journal records this process committed and has not shipped yet, kept in memory.

The shipper (``_journal``) used to read every new journal record back out of LMDB before
shipping it, one Python step per record, under the GIL the handling thread needs.  The store
hands each commit's journal records (already encoded) to a :class:`JournalTail` as it commits
them; the shipper takes them from there (five times cheaper than the LMDB read, and no
transaction), and falls back to reading LMDB whenever the tail does not reach back far enough.

Invariants:

* The tail holds every journal record with ``start <= seq``, contiguously, whole commits at a
  time (a commit's records are added together, after its LMDB transaction committed): what
  :meth:`since` returns never splits a transaction nor includes one that did not commit.
* It is bounded: past ``max_records`` or ``max_bytes`` it forgets everything and starts again
  at the next commit; :meth:`since` then answers None until the shipper has caught up through
  LMDB.  The shipper also has it forget when a shipment fails (:meth:`forget`), so a checkpoint
  store that is down costs no memory here, only the LMDB reads once it is back.
"""

from __future__ import annotations

import threading
from operator import itemgetter

__all__ = ["JournalTail"]

_value = itemgetter(1)


class JournalTail:
    """Recent journal records, by commit (see module docstring); thread-safe."""

    def __init__(self, max_records: int = 250_000, max_bytes: int = 32 << 20) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # (first seq, [(seq key, encoded record), ...], their bytes) per commit, in seq order.
        self._chunks: list[tuple[int, list[tuple[bytes, bytes]], int]] = []
        self._records = 0
        self._bytes = 0
        #: The first seq held (None: nothing held yet, or forgotten over the bounds).
        self.start: int | None = None
        #: How many times the bounds made it forget what it held.
        self.overflows = 0

    def add(self, first: int, records: list[tuple[bytes, bytes]]) -> None:
        """One commit's journal records, seqs ``first``, ``first + 1``...; called in seq order."""
        size = sum(map(len, map(_value, records)))
        with self._lock:
            chunks = self._chunks
            expected = chunks[-1][0] + len(chunks[-1][1]) if chunks else self.start
            if expected != first:
                self._reset(first)  # the first commit, or a gap (records written past the tail)
            self._chunks.append((first, records, size))
            self._records += len(records)
            self._bytes += size
            if self._records > self.max_records or self._bytes > self.max_bytes:
                self._reset(None)
                self.overflows += 1

    def forget(self) -> None:
        """Drop everything held; hold again from the next commit on."""
        with self._lock:
            self._reset(None)

    def _reset(self, start: int | None) -> None:
        self._chunks = []
        self._records = self._bytes = 0
        self.start = start

    def since(self, after: int) -> list[tuple[int, bytes]] | None:
        """``(seq, record)`` of every record with seq > ``after``, in order, or None if the tail does
        not hold ``after + 1`` onwards.  Forgets what is at or below ``after`` (shipped: not asked
        for again)."""
        with self._lock:
            if self.start is None or self.start > after + 1:
                return None
            chunks = self._chunks
            done = 0
            while done < len(chunks) and chunks[done][0] + len(chunks[done][1]) - 1 <= after:
                done += 1
            if done:
                self._records -= sum(len(c[1]) for c in chunks[:done])
                self._bytes -= sum(c[2] for c in chunks[:done])
                del chunks[:done]
                self.start = chunks[0][0] if chunks else after + 1
            held = list(chunks)
        # ``after`` falls inside a commit only when it came from elsewhere (the segments in the store).
        return [(seq, record) for first, records, _ in held
                for seq, (_, record) in enumerate(records, first) if seq > after]
