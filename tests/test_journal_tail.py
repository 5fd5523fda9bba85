"""The journal's in-memory tail (``runtime._journal_tail``) and the shipper that ships from it.

The tail is pure bookkeeping: unit tests, no clock.  The shipper tests use a real LMDB store and a
directory checkpoint store, and restore from what was shipped: segments taken from the tail and
segments read back out of LMDB (after the tail overflowed) rebuild the same state.
"""

from __future__ import annotations

import pytest

from runtime import DirectoryStore
from runtime._journal import Shipper, decode_segment
from runtime._journal_tail import JournalTail
from runtime._restore import restore
from runtime._state import State
from runtime._store import LmdbStore, seq_key

from .test_checkpoint import write

KW = {"map_size": 64 << 20, "sync": False}


def commit(n: int, first: int) -> list[tuple[bytes, bytes]]:
    return [(seq_key(seq), b"r%d" % seq) for seq in range(first, first + n)]


def test_the_tail_hands_over_whole_commits_after_a_seq_and_forgets_what_was_shipped():
    tail = JournalTail()
    assert tail.since(0) is None  # nothing held yet: the shipper reads LMDB
    tail.add(1, commit(3, 1))
    tail.add(4, commit(2, 4))
    assert tail.since(0) == [(s, b"r%d" % s) for s in range(1, 6)]
    assert tail.since(3) == [(4, b"r4"), (5, b"r5")]  # the first commit is forgotten
    assert tail.start == 4 and tail.since(2) is None  # ...so a shipper behind it reads LMDB
    assert tail.since(5) == [] and tail.start == 6


def test_a_seq_inside_a_commit_gets_the_rest_of_that_commit():
    tail = JournalTail()
    tail.add(10, commit(4, 10))
    assert tail.since(8) is None  # 9 was never held
    assert tail.since(11) == [(12, b"r12"), (13, b"r13")]


def test_a_gap_between_commits_starts_the_tail_again_at_the_later_one():
    tail = JournalTail()
    tail.add(1, commit(2, 1))
    tail.add(7, commit(2, 7))  # 3..6 were written past the tail (a replay)
    assert tail.start == 7 and tail.since(2) is None
    assert tail.since(6) == [(7, b"r7"), (8, b"r8")]


def test_past_its_bounds_the_tail_forgets_everything_until_the_next_commit():
    by_records = JournalTail(max_records=5)
    by_records.add(1, commit(3, 1))
    by_records.add(4, commit(3, 4))  # 6 records > 5
    assert by_records.overflows == 1 and by_records.start is None and by_records.since(0) is None
    by_records.add(7, commit(1, 7))
    assert by_records.since(0) is None and by_records.since(6) == [(7, b"r7")]

    by_bytes = JournalTail(max_bytes=10)
    by_bytes.add(1, [(seq_key(1), b"x" * 11)])
    assert by_bytes.overflows == 1 and by_bytes.since(0) is None


def _shipping(tmp_path, ckstore_class=DirectoryStore) -> tuple[DirectoryStore, LmdbStore, Shipper]:
    """A checkpoint store, an agent's LMDB store and its shipper."""
    (tmp_path / "ck").mkdir()
    ckstore = ckstore_class(tmp_path / "ck")
    store = LmdbStore(tmp_path / "a1", agent_id="a1", **KW)
    return ckstore, store, Shipper(store, ckstore, "a1")


def test_segments_from_the_tail_and_from_lmdb_restore_the_same_state(tmp_path):
    ckstore, store, shipper = _shipping(tmp_path)
    write(store, 10, start=0)
    assert store.tail.since(shipper.shipped) is not None  # this shipment comes from the tail
    shipper.ship()
    store.tail.max_records = 5
    write(store, 10, start=10)
    assert store.tail.overflows >= 1 and store.tail.since(shipper.shipped) is None  # ...this one from LMDB
    shipper.ship()
    store.tail.max_records = 500_000
    write(store, 5, start=20)
    assert store.tail.since(shipper.shipped) is not None  # ...and this one from the tail again
    shipper.ship()
    store.close()
    segments = ckstore.list_segments("a1")
    assert [(s.first, s.last) for s in segments] == [(1, 10), (11, 20), (21, 25)]
    shipped = [r for s in segments for r in decode_segment(ckstore.read_segment("a1", s))]
    assert [r.seq for r in shipped] == list(range(1, 26))
    restored, report, _ = restore(tmp_path / "lost", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    assert report.source == "journal" and not report.gap
    assert [v for _, v in State(restored).scan("k/")] == list(range(25))
    restored.close()


class _Refusing(DirectoryStore):
    """A directory store that refuses segments while ``down`` (as a full or unmounted store would)."""

    down = False

    def put_segment(self, agent_id, info, payload):
        if self.down:
            raise OSError(28, "No space left on device")
        return super().put_segment(agent_id, info, payload)


def test_a_shipment_that_fails_leaves_nothing_held_and_the_next_one_reads_lmdb(tmp_path):
    ckstore, store, shipper = _shipping(tmp_path, _Refusing)
    write(store, 5, start=0)
    ckstore.down = True
    with pytest.raises(OSError):
        shipper.ship()
    assert store.tail.start is None and store.tail.since(0) is None  # nothing held while the store is down
    write(store, 3, start=5)
    assert store.tail.since(0) is None  # the next shipment reads LMDB
    ckstore.down = False
    assert shipper.ship() == 8
    (segment,) = ckstore.list_segments("a1")
    assert [r.seq for r in decode_segment(ckstore.read_segment("a1", segment))] == list(range(1, 9))
    write(store, 2, start=8)
    assert shipper.ship() == 10 and len(ckstore.list_segments("a1")) == 2  # and from the tail again
    store.close()
