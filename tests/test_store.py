"""The agent's LMDB store (``runtime/_store.py``) and its retention (``runtime/_retention.py``), on real files.

Beside ``test_state`` (journaling through the state view, replay, unknown
tables), ``test_transitions`` (transition trimming, the dead-letter limit under
large commits) and ``test_fencing`` (a stale writer refused): what a commit
does to each kind of op and to ``seq``, reads (scan, snapshots, windows of the
journal and transitions), metadata, the trimming of the journal, dedup and
dead letters, epochs, and errors on open and after close.
"""

from __future__ import annotations

import struct

import pytest

from protocols import new_id
from runtime import Fenced, StateError
from runtime._store import DELETE, DELETE_RANGE, PUT, TABLES, LmdbStore, Op, dedup_time_key, seq_key

KW = {"agent_id": "a1", "map_size": 64 << 20, "sync": False}
T0 = 1_700_000_000.0


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


@pytest.fixture
def store(tmp_path):
    s = LmdbStore(tmp_path / "s", **KW)
    yield s
    s.close()


def put(key: str, value: str = "v", table: str = "data") -> Op:
    return Op(table, PUT, key.encode(), value.encode())


def data(store: LmdbStore) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in store.scan("data")}


# -- commits and seq -------------------------------------------------------------------------------


def test_a_fresh_store_has_every_table_and_seq_zero(store):
    assert store.seq == 0 and store.stamped_epoch() == 0
    assert {t: store.count(t) for t in TABLES} == dict.fromkeys(TABLES, 0)


def test_commit_returns_the_last_seq_and_the_seq_survives_reopening(tmp_path):
    store = LmdbStore(tmp_path / "s", **KW)
    assert store.commit([put("a"), put("b")]) == 2
    assert store.commit([put("c")]) == 3
    assert store.commit([]) == 3, "an empty commit takes no seq"
    store.close()
    again = LmdbStore(tmp_path / "s", **KW)
    assert again.seq == 3
    assert again.commit([put("d")]) == 4
    again.close()


def test_ops_of_one_commit_apply_in_order_across_tables_and_kinds(store):
    store.commit([put("a", "1"), put("b", "1"), Op("data", DELETE, b"a", None), put("a", "2"),
                  put("k", "x", table="control"), put("b", "3")])
    assert data(store) == {"a": "2", "b": "3"}
    assert store.get("control", b"k") == b"x"
    assert [(r.seq, r.table, r.kind) for r in store.journal_since(0)] == [
        (1, "data", PUT), (2, "data", PUT), (3, "data", DELETE), (4, "data", PUT), (5, "control", PUT),
        (6, "data", PUT)]


def test_a_range_delete_removes_the_half_open_range_and_is_one_journal_record(store):
    store.commit([put(k) for k in ("a", "b1", "b2", "b9", "c", "d")])
    seq = store.commit([Op("data", DELETE_RANGE, b"b", b"c")])
    assert sorted(data(store)) == ["a", "c", "d"], "[b, c): c itself stays"
    assert seq == 7 and store.journal_since(6)[0][2:] == ("data", DELETE_RANGE, b"b", b"c")
    store.commit([Op("data", DELETE_RANGE, b"x", b"z")])  # nothing in range: harmless
    assert sorted(data(store)) == ["a", "c", "d"]


def test_only_ops_on_data_are_transitions(store):
    store.commit([put("a"), put("m", table="dedup"), put("o", table="outbox"), Op("data", DELETE, b"a", None)])
    assert [(t["seq"], t["op"], t["key"]) for t in store.transitions_window()[1]] == [(1, "put", b"a"), (4, "delete", b"a")]
    assert store.count("journal") == 4


@pytest.mark.parametrize("table", ["journal", "transitions", "meta", "nonesuch"])
def test_a_commit_to_a_table_that_is_not_journaled_is_refused_and_changes_nothing(store, table):
    store.commit([put("a")])
    with pytest.raises(StateError, match="not a journaled table"):
        store.commit([put("b"), Op(table, DELETE, b"x", None)])
    assert store.seq == 1 and data(store) == {"a": "v"} and store.count("journal") == 1


def test_the_journal_records_the_commit_time(store):
    store.commit([put("a")], now=T0)
    (rec,) = store.journal_since(0)
    assert rec.ts == T0 and rec.value == b"v"


# -- reads -----------------------------------------------------------------------------------------


def test_scan_takes_a_prefix_a_start_and_a_limit(store):
    store.commit([put(k) for k in ("a/1", "a/2", "a/3", "ab", "b/1")])
    keys = lambda rows: [k.decode() for k, _ in rows]
    assert keys(store.scan("data", b"a/")) == ["a/1", "a/2", "a/3"]
    assert keys(store.scan("data", b"a/", start=b"a/2")) == ["a/2", "a/3"]
    assert keys(store.scan("data", b"a/", limit=2)) == ["a/1", "a/2"]
    assert keys(store.scan("data", b"a/", start=b"a/9")) == []
    assert keys(store.scan("data", b"z")) == []
    assert store.count("data") == 5


def test_a_read_transaction_is_a_snapshot(store):
    store.commit([put("a", "1")])
    txn = store.read_txn()
    try:
        store.commit([put("a", "2"), put("b")])
        assert txn.get(b"a", db=store.db("data")) == b"1" and txn.get(b"b", db=store.db("data")) is None
        assert [k for k, _ in txn.cursor(db=store.db("journal"))] == [seq_key(1)]
    finally:
        txn.abort()
    assert [r.seq for r in store.journal_since(0)] == [1, 2, 3]


def test_the_raw_journal_and_transitions_are_undecoded_and_bounded(store):
    for i in range(5):
        store.commit([put(f"k{i}")])
    assert [seq for seq, _ in store.raw_since("journal", 2)] == [3, 4, 5]
    assert all(isinstance(raw, bytes) for _, raw in store.raw_since("journal", 0))
    assert [seq for seq, _ in store.raw_since("transitions", 1, upto=4)] == [2, 3, 4]
    assert [seq for seq, _ in store.raw_since("transitions", 1, upto=4, limit=2)] == [2, 3]
    assert store.raw_since("transitions", 5, upto=10) == []


def test_a_transitions_window_gives_the_first_local_seq_from_the_same_snapshot(store):
    assert store.transitions_window() == (None, [])
    for i in range(5):
        store.commit([put(f"k{i}")])
    first, records = store.transitions_window(2, limit=2)
    assert first == 1 and [r["seq"] for r in records] == [3, 4]
    assert store.transitions_window(0, limit=0) == (1, [])


# -- metadata --------------------------------------------------------------------------------------


def test_metadata_round_trips_and_is_neither_journaled_nor_numbered(tmp_path):
    store = LmdbStore(tmp_path / "s", **KW)
    assert store.meta("identity") is None and store.meta("identity", {}) == {}
    store.put_meta("identity", {"agent": "a1", "history": [1, 2]})
    assert store.meta("identity") == {"agent": "a1", "history": [1, 2]}
    assert store.seq == 0 and store.count("journal") == 0
    store.close()
    again = LmdbStore(tmp_path / "s", **KW)
    assert again.meta("identity") == {"agent": "a1", "history": [1, 2]}
    again.close()


# -- deferred ops ----------------------------------------------------------------------------------


def test_deferred_ops_take_no_seq_until_the_next_commit_carries_them_ahead_of_its_own(store):
    store.commit([put("a")])
    store.defer([put("seg", "1", table="audit")])
    assert (store.seq, store.deferred, store.count("audit")) == (1, 1, 0), "no commit of their own"
    assert store.commit([put("b")]) == 3
    assert [(r.seq, r.table) for r in store.journal_since(1)] == [(2, "audit"), (3, "data")]
    assert store.deferred == 0 and store.meta("deferred") is None
    assert store.commit([put("c")]) == 4 and store.count("audit") == 1, "carried once"


def test_deferred_ops_outlive_a_crash_on_the_same_disk_and_an_empty_commit_carries_them(tmp_path):
    store = LmdbStore(tmp_path / "s", **KW)
    store.defer([put("seg-1", table="audit")])
    store.defer([put("seg-2", table="audit")])
    store.close()  # what a SIGKILL leaves: the deferred ops are in meta, not yet committed
    again = LmdbStore(tmp_path / "s", **KW)
    assert again.deferred == 2
    assert again.commit([]) == 2 and [v for _, v in again.scan("audit")] == [b"v", b"v"]
    again.close()
    third = LmdbStore(tmp_path / "s", **KW)
    assert third.deferred == 0 and third.commit([]) == 2
    third.close()


def test_replaying_a_journal_that_carried_a_deferred_op_drops_it_so_it_is_committed_once(tmp_path):
    # A checkpoint copied while an op was deferred; the original then committed it (and more).
    first = LmdbStore(tmp_path / "s", **KW)
    first.commit([put("a")])
    first.defer([Op("audit", PUT, b"", b"segment-1")])
    (tmp_path / "copy").mkdir()
    first.env.copy(str(tmp_path / "copy"))
    first.commit([put("b")])
    journal = first.journal_since(1)
    first.close()
    restored = LmdbStore(tmp_path / "copy", **KW)
    assert restored.deferred == 1
    assert restored.replay(journal) == 2 and restored.deferred == 0
    restored.close()
    again = LmdbStore(tmp_path / "copy", **KW)  # the meta mirror went with the replay
    assert again.deferred == 0 and again.count("audit") == 1
    again.close()


# -- retention -------------------------------------------------------------------------------------


def test_reading_the_stores_own_binary_counters_as_metadata_is_a_state_error(store):
    store.take_epoch(3)
    with pytest.raises(StateError, match="'epoch' is not a value put_meta wrote") as info:
        store.meta("epoch")
    assert info.value.details == {"key": "epoch"}


def test_the_journal_is_trimmed_up_to_trim_upto_by_later_commits_a_batch_at_a_time(store):
    store.commit([put(f"k{i}") for i in range(600)])
    store.trim_upto = 550
    store.commit([put("x")])  # budget max(256, 2 * 1): 256 entries go
    assert store.count("journal") == 601 - 256
    store.commit([put("y")])
    assert store.count("journal") == 602 - 512
    store.commit([put("z")])
    assert [r.seq for r in store.journal_since(0)] == list(range(551, 604)), "up to 550 gone, the rest kept"
    assert len(data(store)) == 603, "trimming the journal never touches the state"


def test_a_large_commit_trims_twice_its_size(store):
    store.commit([put(f"k{i}") for i in range(2000)])
    store.trim_upto = 2000
    store.commit([put(f"n{i}") for i in range(400)])  # budget 800
    assert store.count("journal") == 2400 - 800


def test_dedup_entries_older_than_the_horizon_go_with_the_next_commit(store):
    store.dedup_horizon = 60.0
    old_id = ((int(T0 * 1000) - 120_000) << 16).to_bytes(8, "big") + b"\0" * 8
    fresh_id = ((int(T0 * 1000) - 30_000) << 16).to_bytes(8, "big") + b"\0" * 8
    store.commit([Op("dedup", PUT, old_id, b"r"), Op("dedup", PUT, fresh_id, b"r"),
                  Op("dedup_keys", PUT, b"old-key", b"r"), Op("dedup_time", PUT, dedup_time_key(T0 - 120, b"old-key"), b""),
                  Op("dedup_keys", PUT, b"new-key", b"r"), Op("dedup_time", PUT, dedup_time_key(T0 - 30, b"new-key"), b"")],
                 now=T0 - 200)  # at that time, nothing was old
    assert store.count("dedup") == 2 and store.count("dedup_keys") == 2
    store.commit([], now=T0)
    assert [k for k, _ in store.scan("dedup")] == [fresh_id]
    assert [k for k, _ in store.scan("dedup_keys")] == [b"new-key"]
    assert store.count("dedup_time") == 1
    assert store.journal_since(6) == [], "trimming is not journaled"


def test_real_message_ids_are_kept_within_the_horizon(store):
    store.commit([Op("dedup", PUT, new_id(), b"r") for _ in range(3)])
    store.commit([])
    assert store.count("dedup") == 3


def test_lowering_the_dead_letter_limit_trims_the_oldest_a_batch_per_commit(store):
    store.commit([Op("deadletters", PUT, _u64(i), b"x") for i in range(600)])
    store.dead_letter_limit = 10
    store.commit([])
    assert store.count("deadletters") == 600 - 256
    store.commit([])
    store.commit([])
    assert [k for k, _ in store.scan("deadletters")] == [_u64(i) for i in range(590, 600)]


# -- epochs ----------------------------------------------------------------------------------------


def test_a_taken_epoch_is_stamped_on_the_files_and_outlives_the_process(tmp_path):
    store = LmdbStore(tmp_path / "s", **KW)
    store.take_epoch(3)
    assert store.epoch == 3 and store.stamped_epoch() == 3
    store.commit([put("a")])
    store.close()
    again = LmdbStore(tmp_path / "s", **KW)
    assert again.stamped_epoch() == 3 and again.epoch is None
    with pytest.raises(Fenced, match="taken by epoch 3"):
        again.take_epoch(2)
    assert again.stamped_epoch() == 3
    again.take_epoch(4)
    assert again.commit([put("b")]) == 2
    again.close()


def test_an_unfenced_store_commits_whatever_epoch_the_files_carry(tmp_path):
    fenced = LmdbStore(tmp_path / "s", **KW)
    fenced.take_epoch(5)
    fenced.close()
    tool = LmdbStore(tmp_path / "s", **KW)  # a tool or a test: epoch None
    assert tool.commit([put("a")]) == 1
    tool.close()


# -- opening and closing ---------------------------------------------------------------------------


def test_opening_a_path_that_is_a_file_is_a_state_error(tmp_path):
    (tmp_path / "f").write_bytes(b"not a directory")
    with pytest.raises(StateError, match="cannot open LMDB state"):
        LmdbStore(tmp_path / "f", **KW)


def test_a_read_only_open_of_a_missing_path_is_a_state_error(tmp_path):
    with pytest.raises(StateError):
        LmdbStore(tmp_path / "missing", readonly=True, **KW)


def test_a_read_only_open_reads_and_refuses_writes(tmp_path):
    store = LmdbStore(tmp_path / "s", **KW)
    store.commit([put("a")])
    store.close()
    ro = LmdbStore(tmp_path / "s", readonly=True, **KW)
    assert ro.seq == 1 and data(ro) == {"a": "v"}
    with pytest.raises(StateError):
        ro.commit([put("b")])
    ro.close()


def test_reads_and_commits_after_close_are_state_errors(tmp_path):
    store = LmdbStore(tmp_path / "s", **KW)
    store.commit([put("a")])
    store.close()
    with pytest.raises(StateError):
        store.get("data", b"a")
    with pytest.raises(StateError):
        store.commit([put("b")])
