"""Checkpoints and restore, without Ray: format, corruption, retention, fallbacks."""

from __future__ import annotations

import pytest

from protocols import encode_envelope, make_envelope
from runtime import CheckpointCorrupt, DirectoryStore
from runtime._checkpoint import Checkpointer
from runtime._core import AgentCore
from runtime._journal import Shipper
from runtime._reply import decode_reply
from runtime._restore import restore
from runtime._spec import HostSpec
from runtime._state import State
from runtime._store import LmdbStore

from .agents import Append, Counter, GetItems

KW = {"map_size": 64 << 20, "sync": False}


def make(tmp_path, agent="a1"):
    ck = tmp_path / "ck"
    ck.mkdir(exist_ok=True)
    ckstore = DirectoryStore(ck)
    store = LmdbStore(tmp_path / agent / "state", agent_id=agent, **KW)
    shipper = Shipper(store, ckstore, agent)
    cp = Checkpointer(store, ckstore, shipper, agent_id=agent, agent_class="x:Y", config_version="7",
                      keep=3, retention=0.0)
    return store, ckstore, shipper, cp


def write(store, n, start=0):
    state = State(store)
    for i in range(start, start + n):
        state.begin()
        state.put(f"k/{i:05d}", i)
        store.commit(state.take_ops())


def items(store):
    return [v for _, v in State(store).scan("k/")]


def test_manifest_records_what_the_checkpoint_is(tmp_path):
    store, ckstore, _, cp = make(tmp_path)
    write(store, 10)
    m = cp.take()
    assert (m.agent_id, m.agent_class, m.config_version, m.seq) == ("a1", "x:Y", "7", 10)
    assert m.checksum.startswith("sha256:") and m.size > 0
    assert ckstore.read_manifest("a1", 10) == m
    assert cp.take() is None, "nothing changed: no new checkpoint"


def test_flipped_byte_is_detected_before_lmdb_opens_it(tmp_path):
    store, ckstore, _, cp = make(tmp_path)
    write(store, 10)
    m = cp.take()
    body = tmp_path / "ck" / "a1" / f"ckpt-{m.seq:020d}.mdb"
    raw = bytearray(body.read_bytes())
    raw[100] ^= 0x80
    body.write_bytes(bytes(raw))
    with pytest.raises(CheckpointCorrupt, match="checksum"):
        ckstore.fetch_checkpoint(m, tmp_path / "restored" / "data.mdb")
    assert not (tmp_path / "restored" / "data.mdb").exists()


def test_torn_manifest_is_corrupt(tmp_path):
    store, ckstore, _, cp = make(tmp_path)
    write(store, 3)
    cp.take()
    path = tmp_path / "ck" / "a1" / f"ckpt-{3:020d}.manifest"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointCorrupt):
        ckstore.read_manifest("a1", 3)


def test_restore_prefers_newest_valid_checkpoint_then_replays_journal(tmp_path):
    store, ckstore, shipper, cp = make(tmp_path)
    write(store, 10)
    first = cp.take()
    write(store, 10, start=10)
    newest = cp.take()
    write(store, 5, start=20)
    shipper.ship()
    store.close()
    body = tmp_path / "ck" / "a1" / f"ckpt-{newest.seq:020d}.mdb"
    raw = bytearray(body.read_bytes())
    raw[-1] ^= 0x01  # one bit of one byte
    body.write_bytes(bytes(raw))
    restored, report, base = restore(tmp_path / "lost" / "state", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    assert base.seq == first.seq and report.source == "checkpoint"
    assert report.ops_replayed == 15 and not report.gap
    assert len(report.corrupt) == 1 and "checksum" in report.corrupt[0]
    assert items(restored) == list(range(25))
    restored.close()


def test_restore_without_any_checkpoint_replays_whole_journal(tmp_path):
    store, ckstore, shipper, _ = make(tmp_path)
    write(store, 7)
    shipper.ship()
    store.close()
    restored, report, _ = restore(tmp_path / "lost", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    assert report.source == "journal" and items(restored) == list(range(7))
    restored.close()


def test_journal_gap_stops_replay_and_is_reported(tmp_path):
    store, ckstore, shipper, _ = make(tmp_path)
    write(store, 3)
    shipper.ship()
    write(store, 3, start=3)
    shipper.ship()
    write(store, 3, start=6)
    shipper.ship()
    store.close()
    middle = ckstore.list_segments("a1")[1]
    ckstore.delete_segment("a1", middle)
    restored, report, _ = restore(tmp_path / "lost", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    assert report.gap and items(restored) == [0, 1, 2]
    restored.close()


def test_stale_local_copy_is_caught_up_from_the_journal(tmp_path):
    store, ckstore, shipper, _ = make(tmp_path)
    write(store, 4)
    shipper.ship()
    store.close()
    # Elsewhere (another node) the agent went on from the shipped journal.
    other, _, _ = restore(tmp_path / "node2", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    write(other, 4, start=4)
    Shipper(other, ckstore, "a1").ship()
    other.close()
    back, report, _ = restore(tmp_path / "a1" / "state", ckstore, agent_id="a1", agent_class="x:Y", **KW)
    assert report.source == "local" and report.ops_replayed == 4
    assert items(back) == list(range(8))
    back.close()


def test_retention_keeps_k_checkpoints_and_the_journal_back_to_the_previous_one(tmp_path):
    store, ckstore, shipper, cp = make(tmp_path)
    seqs = []
    for round_ in range(5):
        write(store, 5, start=round_ * 5)
        shipper.ship()
        seqs.append(cp.take().seq)
    assert ckstore.list_checkpoints("a1") == seqs[::-1][:3]
    first_kept = ckstore.list_segments("a1")[0].first
    assert first_kept == seqs[-2] + 1, "segments up to the previous checkpoint were trimmed"
    write(store, 1, start=100)  # the next commit carries the local trims
    assert [r.seq for r in store.journal_since(0)][0] > seqs[-2] - 5


def test_local_state_of_another_agent_is_refused(tmp_path):
    from runtime import RestoreError

    store, ckstore, _, _ = make(tmp_path)
    write(store, 1)
    store.put_meta("identity", {"agent_id": "a1", "agent_class": "x:Y"})
    store.close()
    with pytest.raises(RestoreError, match="belongs to agent 'a1'"):
        restore(tmp_path / "a1" / "state", ckstore, agent_id="a2", agent_class="x:Y", **KW)


def test_agent_core_handles_and_checkpoints_without_ray(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "ck").mkdir()
    spec = HostSpec("core-1", Counter, str(tmp_path / "data"), str(tmp_path / "ck"))
    core = AgentCore(spec)
    for i in range(3):
        ok, _ = decode_reply(core.deliver(encode_envelope(make_envelope(Append(item=i), "core-1"))))
        assert ok
    manifest = core.checkpoint()
    assert manifest["summary"] == {"count": 3, "items": 3}
    assert core.stop()["state"] == "stopped"

    core = AgentCore(spec)
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(GetItems(), "core-1"))))
    core.stop()
    assert core.restore_report.source == "local" and core.restore_report.incarnation == 2
    assert value == [0, 1, 2]


def test_sweep_removes_what_an_interrupted_checkpoint_left(tmp_path):
    store, ckstore, _, cp = make(tmp_path)
    write(store, 3)
    kept = cp.take()
    base = tmp_path / "ck" / "a1"
    (base / f"ckpt-{99:020d}.mdb").write_bytes(b"half-published body")
    ckstore.staging("a1")
    assert ckstore.sweep("a1") == 2
    assert ckstore.list_checkpoints("a1") == [kept.seq]
    assert (base / f"ckpt-{kept.seq:020d}.mdb").exists()


def test_a_receiver_whose_high_water_mark_rolled_back_goes_on_from_the_senders_base(tmp_path):
    """ASYNC durability, node lost before the journal shipped: the receiver restores a
    high-water mark below what it acknowledged.  The sender, which deleted what was
    acknowledged, sends from there on; the receiver must not wait for that gap forever."""
    from protocols import encode_batch
    from runtime._config import AgentConfig

    from .agents import Add, GetCount

    def batch(base, seqs):
        envs = []
        for seq in seqs:
            env = make_envelope(Add(n=1), "rx", sender="tx")
            env.seq = seq
            envs.append(encode_envelope(env))
        return encode_batch(base, envs)

    quiet = AgentConfig(ship_interval=3600, checkpoint_interval=3600)
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
    (tmp_path / "ck").mkdir()
    first = AgentCore(HostSpec("rx", Counter, str(tmp_path / "a"), str(tmp_path / "ck"), config=quiet))
    assert decode_reply(first.deliver_batch(batch(0, [1, 2])))[1][0] == 2
    first.checkpoint(force=True)
    assert decode_reply(first.deliver_batch(batch(2, [3, 4, 5])))[1][0] == 5  # acknowledged, never shipped
    first.close_files()  # the node is gone

    second = AgentCore(HostSpec("rx", Counter, str(tmp_path / "b"), str(tmp_path / "ck"), config=quiet))
    assert second.restore_report.source == "checkpoint"
    assert decode_reply(second.deliver_batch(batch(5, [6, 7])))[1][0] == 7
    ok, count = decode_reply(second.deliver(encode_envelope(make_envelope(GetCount(), "rx"))))
    assert (ok, count) == (True, 4), "messages 3-5 were lost with the node (the ASYNC window); 6 and 7 were not"
    second.stop()


def test_a_sender_restored_from_an_older_point_is_not_taken_for_a_duplicate(tmp_path):
    """ASYNC durability, the sender's node lost: its restored outbox numbers new messages
    from an older seq than the receiver has seen.  Under the new epoch they rank after
    everything the old epoch numbered, so they are handled, once each, in order."""
    from protocols import encode_batch
    from runtime._config import AgentConfig

    from .agents import Append, GetItems

    def batch(base, epoch, items):  # items: (numbering epoch, seq, value)
        envs = []
        for numbered, seq, value in items:
            env = make_envelope(Append(item=value), "rx", sender="tx", epoch=numbered)
            env.seq = seq
            envs.append(encode_envelope(env))
        return encode_batch(base, envs, epoch)

    (tmp_path / "a").mkdir()
    (tmp_path / "ck").mkdir()
    rx = AgentCore(HostSpec("rx", Counter, str(tmp_path / "a"), str(tmp_path / "ck"), config=AgentConfig()))
    old = rx.ckstore.claim_epoch("tx", {})
    # The old incarnation's messages 1-5 were handled (it then lost 4 and 5 to a rollback).
    assert decode_reply(rx.deliver_batch(batch(0, old, [(old, s, s) for s in range(1, 6)])))[1][0] == 5
    new = rx.ckstore.claim_epoch("tx", {})
    # The new one resends its restored outbox (3, numbered by the old epoch), then new
    # messages it numbered 4, 5, 6 under its own epoch.
    reply = decode_reply(rx.deliver_batch(batch(2, new, [(old, 3, 3), (new, 4, 40), (new, 5, 50), (new, 6, 60)])))
    assert reply[1][0] == 6
    # A gap in the new numbering is still a gap: nothing past it is handled.
    reply = decode_reply(rx.deliver_batch(batch(6, new, [(new, 8, 80)])))
    assert reply[1][0] == 6
    ok, items = decode_reply(rx.deliver(encode_envelope(make_envelope(GetItems(), "rx"))))
    assert items == [1, 2, 3, 4, 5, 40, 50, 60], "old 3 once (a duplicate), every new one once, in order"
    rx.stop()
