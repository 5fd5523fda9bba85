"""The audit log on disk: appends and syncs, checkpoints and anchors, resuming, torn tails (no Ray, fake clock)."""

from __future__ import annotations

import itertools
import os

import pytest

from audit import (
    AnchorFailed,
    AuditLog,
    DirectoryAnchor,
    LogStorageError,
    SigningKey,
    TamperDetected,
    TornRecord,
    open_checkpoint,
    read_log,
    repair_log,
    verify_log,
)

KEY = SigningKey.generate("garrison.test/audit")
ORIGIN = "garrison.test/audit/log-1"


def clock():
    ticks = itertools.count(1000)
    return lambda: float(next(ticks))


def write(directory, n, *, every=10, start=0, **kw):
    with AuditLog(directory, KEY, ORIGIN, clock=clock(), checkpoint_every=every, **kw) as log:
        for i in range(start, start + n):
            log.append("test.event", {"i": i})
        return log.size


def test_a_record_is_durable_after_sync_and_a_checkpoint_never_names_an_unsynced_one(tmp_path):
    log = AuditLog(tmp_path, KEY, ORIGIN, clock=clock(), checkpoint_every=5)
    for i in range(4):
        log.append("e", i)
    assert (tmp_path / "records").stat().st_size == 0, "buffered until sync"
    log.sync()
    assert len(read_log(tmp_path)) == 4
    log.append("e", 4)  # the fifth: a checkpoint, which syncs first
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["00000000000000000005.note"]
    assert len(read_log(tmp_path)) == 5
    cp = open_checkpoint((tmp_path / "checkpoints" / "00000000000000000005.note").read_bytes(), KEY.verifier)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 5, log.root())
    log.close()


def test_records_carry_the_clocks_time_and_link_in_order(tmp_path):
    write(tmp_path, 3)
    records = read_log(tmp_path)
    assert [(r["index"], r["time"], r["body"]) for r in records] == [(0, 1000.0, {"i": 0}), (1, 1001.0, {"i": 1}),
                                                                     (2, 1002.0, {"i": 2})]
    assert records[0]["prev_hash"] == bytes(32)


def test_reopening_resumes_the_chain_and_the_tree(tmp_path):
    assert write(tmp_path, 25) == 25
    assert write(tmp_path, 17, start=25) == 42
    assert [r["index"] for r in read_log(tmp_path)] == list(range(42))
    report = verify_log(tmp_path, KEY.verifier)
    assert report.ok and (report.records, report.checkpoints, report.verified) == (42, 4, 4), report
    # close() signs nothing; the second writer counts from the newest checkpoint (20) on
    assert sorted(int(p.stem) for p in (tmp_path / "checkpoints").iterdir()) == [10, 20, 30, 40]


def test_a_torn_last_record_is_refused_on_opening_and_cut_only_by_repair(tmp_path):
    write(tmp_path, 12)
    whole = (tmp_path / "records").stat().st_size
    with open(tmp_path / "records", "ab") as f:
        f.write(b"\x00\x00\x00\x40half a record")  # a crash mid-append
    with pytest.raises(TornRecord) as caught:
        AuditLog(tmp_path, KEY, ORIGIN, clock=clock())
    assert (caught.value.index, caught.value.offset) == (12, whole)
    assert (tmp_path / "records").stat().st_size == whole + 17, "opening never truncates"
    assert repair_log(tmp_path) == 17
    assert repair_log(tmp_path) == 0
    assert write(tmp_path, 1, start=12) == 13
    assert verify_log(tmp_path, KEY.verifier).ok


def test_reopening_a_tampered_log_or_one_cut_behind_its_checkpoint_is_refused(tmp_path):
    write(tmp_path, 20)
    data = bytearray((tmp_path / "records").read_bytes())
    (tmp_path / "records").write_bytes(data[: len(data) - 30])  # cut into record 19, then drop its tail whole
    repair_log(tmp_path)
    with pytest.raises(TamperDetected) as caught:
        AuditLog(tmp_path, KEY, ORIGIN, clock=clock())
    assert (caught.value.index, caught.value.reason) == (19, "truncated")


def test_each_checkpoint_goes_to_every_anchor_and_a_failing_one_is_reported_after_the_others(tmp_path):
    seen = []

    def broken(note):
        raise ConnectionError("webhook down")

    with pytest.raises(AnchorFailed, match="webhook down"):
        write(tmp_path / "log", 10, anchors=[broken, DirectoryAnchor(tmp_path / "copy"), seen.append])
    assert len(seen) == 1 and (tmp_path / "log" / "checkpoints" / "00000000000000000010.note").exists()
    copy = (tmp_path / "copy" / "00000000000000000010.note").read_text()
    assert copy == seen[0] == (tmp_path / "log" / "checkpoints" / "00000000000000000010.note").read_text()
    write(tmp_path / "log", 10, start=10, anchors=[DirectoryAnchor(tmp_path / "copy")])
    assert sorted(os.listdir(tmp_path / "copy")) == ["00000000000000000010.note", "00000000000000000020.note"]


def test_without_a_key_no_checkpoint_is_written(tmp_path):
    with AuditLog(tmp_path, None, ORIGIN, clock=clock(), checkpoint_every=2) as log:
        for i in range(5):
            log.append("e", i)
        assert log.checkpoint() is None
    assert os.listdir(tmp_path / "checkpoints") == []
    assert verify_log(tmp_path, KEY.verifier).ok


def test_file_system_errors_leave_as_log_storage_errors(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(LogStorageError) as caught:
        AuditLog(tmp_path / "file", KEY, ORIGIN)
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(LogStorageError):
        verify_log(tmp_path / "missing", KEY.verifier)


def test_a_sync_that_failed_half_way_is_cut_back_before_the_next_one_writes(tmp_path):
    log = AuditLog(tmp_path, KEY, ORIGIN, clock=clock(), checkpoint_every=100)
    log.append("e", 0)
    log.sync()
    whole = (tmp_path / "records").stat().st_size
    log.append("e", 1)
    with open(tmp_path / "records", "ab") as f:  # what a write cut short by a full disk leaves
        f.write(b"\x00\x00\x01\x00half a rec")
    log.append("e", 2)
    log.sync()  # the retry: from where the last good sync ended, not after the torn bytes
    assert (tmp_path / "records").stat().st_size > whole
    assert [r["body"] for r in read_log(tmp_path)] == [0, 1, 2]
    log.checkpoint()
    assert verify_log(tmp_path, [KEY.verifier]).ok


def test_no_file_stays_open_for_writing_between_syncs(tmp_path):
    log = AuditLog(tmp_path, KEY, ORIGIN, clock=clock())
    log.append("e", 0)
    log.sync()
    fds = os.listdir("/proc/self/fd")
    held = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [p for p in held if p.startswith(str(tmp_path))], held
