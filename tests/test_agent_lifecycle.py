"""Agents on a real local Ray: crash recovery, node loss, corrupt checkpoints, retention."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from runtime import AgentConfig, Durability

from .agents import Append, Counter, GetCount, GetItems
from .waiting import wait_for

pytestmark = pytest.mark.ray

FAST = {"checkpoint_interval": 0.5, "ship_interval": 0.1, "journal_retention": 0.5}



def test_sigkilled_agent_comes_back_with_every_acknowledged_message(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    acknowledged = 0
    under_way, killed = threading.Event(), threading.Event()
    pid = ref.admin.status()["pid"]

    def killer():
        if under_way.wait(120):  # killed mid-stream: after 50 acknowledged asks, with more coming
            os.kill(pid, signal.SIGKILL)
        killed.set()  # (not killed at all: the incarnation check below fails)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    sent = 0
    while not killed.is_set() or sent < 400:
        ref.ask(Append(item=sent), timeout=30)
        acknowledged += 1
        sent += 1
        if acknowledged == 50:
            under_way.set()
    t.join()
    # Asks retry across the restart; control calls do not, so they come after one.
    assert ref.ask(GetCount()) == acknowledged
    assert ref.ask(GetItems()) == list(range(acknowledged)), "each effect exactly once, in order"
    status = ref.admin.status()
    assert status["incarnation"] == 2, "Ray restarted the process and the host restored itself"
    assert status["restore"]["source"] == "local"


def _state_after_node_loss(system, agent_id, data_dir: Path, durability: Durability):
    cfg = AgentConfig(checkpoint_interval=3600, ship_interval=0.1, durability=durability)
    ref = system.spawn(Counter, agent_id, config=cfg)
    for i in range(60):
        ref.ask(Append(item=i))
    checkpoint = ref.admin.checkpoint()
    for i in range(60, 90):
        ref.ask(Append(item=i))
    wait_for(lambda: ref.admin.status()["shipped_seq"] > checkpoint["seq"])
    for i in range(90, 100):  # the last few may not be shipped yet
        ref.ask(Append(item=i))
    shipped = ref.admin.status()["shipped_seq"]
    system.kill(agent_id)  # SIGKILL-like: no final checkpoint, no restart
    shutil.rmtree(data_dir / "agents" / agent_id)
    ref = system.spawn(Counter, agent_id, config=cfg)
    return ref, 100, shipped


def test_lost_data_directory_restores_last_shipped_operation(system, agent_id):
    ref, acknowledged, shipped_before_kill = _state_after_node_loss(system, agent_id, system.data_dir, Durability.ASYNC)
    status = ref.admin.status()
    report = status["restore"]
    assert report["source"] == "checkpoint"
    assert report["ops_replayed"] > 0
    store_head = max(s.last for s in _segments(system, agent_id))
    assert status["seq"] == store_head >= shipped_before_kill
    items = ref.ask(GetItems())
    # Exactly the prefix the shipped journal describes: each Append is 4 ops (count, item, the
    # effectively-once record and the audit log's request record), so count == seq // 4.
    assert items == list(range(len(items)))
    assert ref.ask(GetCount()) == len(items) == status["seq"] // 4
    assert len(items) <= acknowledged


def test_lost_data_directory_in_sync_mode_keeps_every_acknowledged_message(system, agent_id):
    ref, acknowledged, _ = _state_after_node_loss(system, agent_id, system.data_dir, Durability.SYNC)
    assert ref.admin.status()["restore"]["source"] == "checkpoint"
    assert ref.ask(GetItems()) == list(range(acknowledged))


def _segments(system, agent_id):
    from runtime import DirectoryStore

    return DirectoryStore(system.checkpoint_dir).list_segments(agent_id)


def test_flipped_byte_in_newest_checkpoint_falls_back_to_previous(system, agent_id):
    from runtime import DirectoryStore

    ref = system.spawn(Counter, agent_id, config={"checkpoint_interval": 3600, "ship_interval": 0.1})
    for i in range(20):
        ref.ask(Append(item=i))
    first = ref.admin.checkpoint()
    for i in range(20, 40):
        ref.ask(Append(item=i))
    newest = ref.admin.checkpoint()
    for i in range(40, 50):
        ref.ask(Append(item=i))
    wait_for(lambda: ref.admin.status()["shipped_seq"] == ref.admin.status()["seq"])
    expected = ref.ask(GetItems())
    system.kill(agent_id)
    shutil.rmtree(system.data_dir / "agents" / agent_id)

    body = Path(system.checkpoint_dir) / agent_id / f"ckpt-{newest['seq']:020d}.mdb"
    raw = bytearray(body.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    body.write_bytes(bytes(raw))

    ref = system.spawn(Counter, agent_id, config={"checkpoint_interval": 3600, "ship_interval": 0.1})
    report = ref.admin.status()["restore"]
    assert report["checkpoint_seq"] == first["seq"], "the corrupt newest checkpoint was skipped"
    assert any("checksum" in c for c in report["corrupt"]), report["corrupt"]
    assert ref.ask(GetItems()) == expected
    store = DirectoryStore(system.checkpoint_dir)
    assert newest["seq"] in store.list_checkpoints(agent_id), "the corrupt file is kept for investigation"


def test_checkpoints_every_interval_and_trims_to_retention(system, agent_id):
    from runtime import DirectoryStore

    cfg = {**FAST, "keep_checkpoints": 2}
    ref = system.spawn(Counter, agent_id, config=cfg)
    store = DirectoryStore(system.checkpoint_dir)
    # Writes keep coming (however long it takes under load) until four interval checkpoints were
    # taken and the local journal was trimmed (local deletes ride along with later commits): bounded,
    # not the whole history of 3 records per Append.
    i = 0
    deadline = time.monotonic() + 120
    while (status := ref.admin.status())["checkpoints_taken"] < 4 or status["journal_entries"] >= 3 * i // 2:
        assert time.monotonic() < deadline, status
        for _ in range(20):
            ref.ask(Append(item=i))
            i += 1
    seqs = store.list_checkpoints(agent_id)
    assert 1 <= len(seqs) <= 2
    segments = store.list_segments(agent_id)
    assert segments[0].first > 1, "segments older than the previous checkpoint and the retention were trimmed"
    previous = store.read_manifest(agent_id, seqs[-1])
    assert segments[0].first <= previous.seq + 1, "the journal still reaches back to the previous checkpoint"
    history = ref.admin.transitions(0, 10_000_000)
    assert len(history) == 2 * i, "the whole transition history, local and shipped, is read back"
    summary = store.read_manifest(agent_id, seqs[0]).summary
    assert summary["count"] <= i and summary["items"] == summary["count"]
