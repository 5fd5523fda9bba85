"""The state-transition log: shipped as immutable segments, trimmed locally, read back whole."""

from __future__ import annotations

import time

import pytest

from runtime import DirectoryStore
from runtime._checkpoint import Checkpointer
from runtime._ckstore import CheckpointCorrupt, SegmentInfo, write_once
from runtime._journal import Shipper
from runtime._restore import restore
from runtime._state import State
from runtime._store import LmdbStore
from runtime._transitions import TransitionLog

from .agents import Append, Counter
from .waiting import wait_for

KW = {"map_size": 64 << 20, "sync": False}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make(tmp_path, agent="a1", retention=1e9, clock=time.time, segment_records=100_000):
    ck = tmp_path / "ck"
    ck.mkdir(exist_ok=True)
    ckstore = DirectoryStore(ck)
    store = LmdbStore(tmp_path / agent / "state", agent_id=agent, **KW)
    shipper = Shipper(store, ckstore, agent)
    log = TransitionLog(store, ckstore, agent, retention=retention, clock=clock, segment_records=segment_records)
    cp = Checkpointer(store, ckstore, shipper, agent_id=agent, agent_class="x:Y", config_version="7",
                      keep=2, retention=0.0, transitions=log)
    return store, ckstore, log, cp


def write(store, n, start=0, per_commit=1, now=None):
    state = State(store)
    for i in range(start, start + n, per_commit):
        state.begin()
        for j in range(i, min(i + per_commit, start + n)):
            state.put(f"k/{j:05d}", j)
        store.commit(state.take_ops(), now=now)


def rounds(store, cp, n_rounds, per_round, per_commit=1, t0=None):
    for r in range(n_rounds):
        write(store, per_round, r * per_round, per_commit, now=None if t0 is None else t0 + 10 * r)
        assert cp.take() is not None


def test_local_transitions_are_trimmed_and_history_is_read_from_segments(tmp_path):
    store, ckstore, log, cp = make(tmp_path)
    rounds(store, cp, 10, 200)
    write(store, 50, 2000)  # a few commits carry the trims of the last shipment
    assert store.count("transitions") <= 250, "the local table holds about one checkpoint interval"
    assert len(ckstore.list_transitions("a1")) == 10
    history = log.read(0, 10_000_000)
    assert [t["seq"] for t in history] == list(range(1, 2051)), "the whole history, from seq 1, in order"
    assert [t["key"] for t in history[:3]] == [b"k/00000", b"k/00001", b"k/00002"]
    assert {t["agent"] for t in history} == {"a1"} and {t["op"] for t in history} == {"put"}
    # Paging across the boundary between segments and the local table.
    paged, after = [], 0
    while page := log.read(after, 333):
        paged += page
        after = page[-1]["seq"]
    assert paged == history
    assert log.read(1990, 3) == history[1990:1993]


def test_trimming_keeps_up_with_large_commits(tmp_path):
    store, ckstore, log, cp = make(tmp_path, segment_records=1000)
    rounds(store, cp, 6, 3000, per_commit=1000)  # 3 commits a round, each over the fixed budget of 256
    write(store, 2000, 20_000, per_commit=1000)
    assert store.count("transitions") == 2000, "only what the last shipment did not cover"
    segs = ckstore.list_transitions("a1")
    assert [(s.first, s.last) for s in segs[:4]] == [(1, 1000), (1001, 2000), (2001, 3000), (3001, 4000)]
    assert len(segs) == 18, "a shipment larger than a segment's cap becomes several segments"
    assert [t["seq"] for t in log.read(0, 10**7)] == list(range(1, 20_001))


def test_segment_files_are_never_rewritten(tmp_path):
    store, ckstore, log, cp = make(tmp_path)
    rounds(store, cp, 3, 100)
    folder = tmp_path / "ck" / "a1" / "transitions"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert len(before) == 3
    rounds(store, cp, 3, 100)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert len(after) == 6
    assert {name: after[name] for name in before} == before, "same inode, time and bytes"
    segs = ckstore.list_transitions("a1")
    assert all(a.last + 1 == b.first for a, b in zip(segs, segs[1:])), "append-only: each follows the last"


def test_write_once_never_replaces_a_file(tmp_path):
    path = tmp_path / "seg"
    assert write_once(path, b"one") is True
    inode = path.stat().st_ino
    assert write_once(path, b"two") is False
    assert path.read_bytes() == b"one" and path.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["seg"], "no temp file left behind"
    # The store: the same segment again is a no-op, a different one under its name an error.
    store = DirectoryStore(tmp_path)
    info = SegmentInfo(1, 2, 1000.0, 1)
    store.put_transitions("a", info, b"payload")
    store.put_transitions("a", info, b"payload")
    with pytest.raises(CheckpointCorrupt):
        store.put_transitions("a", info, b"other")
    assert store.read_transitions("a", info) == b"payload"


def test_retention_deletes_whole_segments_oldest_first(tmp_path):
    clock = Clock()
    clock.now = 1000.0
    store, ckstore, log, cp = make(tmp_path, retention=100.0, clock=clock)
    rounds(store, cp, 4, 50, t0=1000.0)  # records of round r written at 1000 + 10 r
    assert [(s.first, s.last_time) for s in ckstore.list_transitions("a1")] == [
        (1, 1000.0), (51, 1010.0), (101, 1020.0), (151, 1030.0)]
    clock.now = 1011.0 + 100.0  # the first two segments are past retention
    write(store, 10, 200, now=1040.0)
    cp.take()
    assert [s.first for s in ckstore.list_transitions("a1")] == [101, 151, 201]
    history = log.read(0, 10**6)
    assert history[0]["seq"] == 101 and [t["seq"] for t in history] == list(range(101, 211))


def test_restore_from_the_store_keeps_the_whole_history(tmp_path):
    store, ckstore, log, cp = make(tmp_path)
    rounds(store, cp, 5, 100)
    write(store, 30, 500)
    cp.shipper.ship()  # the journal has them; the transition segments do not yet
    store.close()
    restored, report, _ = restore(tmp_path / "elsewhere", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    assert report.source == "checkpoint" and restored.seq == 530
    assert restored.count("transitions") < 530
    log2 = TransitionLog(restored, ckstore, "a1", retention=1e9)
    assert log2.shipped == 500
    assert [t["seq"] for t in log2.read(0, 10**6)] == list(range(1, 531))
    assert [v for _, v in State(restored).scan("k/")] == list(range(530))
    restored.close()


def test_local_table_is_bounded_and_ref_reads_the_full_history(system, agent_id):
    cfg = {"checkpoint_interval": 0.3, "ship_interval": 0.1, "journal_retention": 0.3}
    ref = system.spawn(Counter, agent_id, config=cfg)
    n = 0
    # Enough checkpoints that the local table must have been trimmed.
    while n < 200 or ref.admin.status()["checkpoints_taken"] < 5:
        for _ in range(50):
            ref.ask(Append(item=n))
            n += 1
    ref.ask(Append(item=n))
    n += 1
    status = wait_for(lambda: (s := ref.admin.status())["transition_entries"] < 2 * n and s)
    assert status["transitions_shipped_seq"] > 0
    store = DirectoryStore(system.checkpoint_dir)
    assert store.list_transitions(agent_id), "older transitions went to segments"
    history = ref.admin.transitions(0, 10_000_000)
    assert len(history) == 2 * n, "two ops on data per Append, none lost to the trim"
    seqs = [t["seq"] for t in history]
    # The first op after the agent version's record (``_version``, at the first start).
    assert seqs[0] == ref.admin.versions()[0]["seq"] + 1 and seqs == sorted(set(seqs))
    assert [t["key"] for t in history[:2]] == [b"count", b"item/00000001"]
    assert ref.admin.transitions(seqs[9], 5) == history[10:15]
    # Stopped and started again, the history is the same.
    system.stop(agent_id)
    ref = system.spawn(Counter, agent_id, config=cfg)
    assert ref.admin.transitions(0, 10_000_000) == history


def test_dead_letters_stay_at_their_limit_under_large_commits(tmp_path):
    """The dead-letter trim keeps up when one commit adds more than the old fixed budget of 256."""
    store = LmdbStore(tmp_path / "s", agent_id="a1", **KW)
    store.dead_letter_limit = 100
    from runtime._store import PUT, Op

    for c in range(5):
        store.commit([Op("deadletters", PUT, f"{c:04d}-{i:06d}".encode(), b"x") for i in range(1000)])
        assert store.count("deadletters") == 100
    assert store.scan("deadletters")[0][0] == b"0004-000900", "the oldest went first"
    store.close()


def test_a_segments_audit_record_is_committed_before_the_checkpoint_copy_so_it_costs_no_checkpoint(tmp_path):
    from runtime._audit import segment_op

    store, ckstore, log, cp = make(tmp_path)
    log.on_shipped = lambda info, n, payload: store.defer([segment_op(info, n, payload, 0.0)])
    write(store, 100)
    manifest = cp.take()
    [seg] = ckstore.list_transitions("a1")
    assert (seg.first, seg.last) == (1, 100)
    assert manifest.seq == store.seq == 101 and store.deferred == 0, "the record is in the copy"
    assert store.count("audit") == 1 and store.journal_since(100)[0].table == "audit"
    assert cp.take() is None, "nothing changed since: no second checkpoint for the record"
    write(store, 10, 100)
    assert cp.take().seq == store.seq == 112 and store.count("audit") == 2
