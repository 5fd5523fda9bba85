"""Fencing: a replaced incarnation's late writes and late messages are refused.

Unit tests drive cores in-process (no Ray) with two data directories that
share one checkpoint store, as two nodes would; the last test does the same
with real Ray actors: an incarnation hangs in a handler, a spare takes the
agent over, and the old one wakes up.
"""

from __future__ import annotations

import threading

import pytest
import ray

from protocols import StaleEpoch, encode_batch, encode_envelope, error_from_wire, make_envelope
from runtime import AgentState, DirectoryStore, Fenced
from runtime._ckstore import epoch_cutoff
from runtime._core import AgentCore
from runtime._reply import decode_reply
from runtime._spec import HostSpec
from runtime._store import _U64, LmdbStore

from .agents import Add, Counter, GetCount, Laggard, Linger, Report
from .waiting import wait_for


def _reply(raw: bytes):
    ok, value = decode_reply(raw)
    return value if ok else error_from_wire(value)


def _spec(tmp_path, node: str, agent: str = "f-1", cls=Counter, **config) -> HostSpec:
    from runtime import AgentConfig

    (tmp_path / node).mkdir(exist_ok=True)
    (tmp_path / "ck").mkdir(exist_ok=True)
    return HostSpec(agent, cls, str(tmp_path / node), str(tmp_path / "ck"), config=AgentConfig(**config))


def test_epochs_are_claimed_once_each_even_when_racing(tmp_path):
    store = DirectoryStore(tmp_path)
    claimed: list[int] = []
    threads = [threading.Thread(target=lambda: claimed.append(store.claim_epoch("a", {}))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 17))
    assert store.superseded("a", 15) and not store.superseded("a", 16)
    assert not store.superseded("never-claimed", 1)


def test_a_replaced_incarnation_can_neither_commit_nor_publish(tmp_path):
    old = AgentCore(_spec(tmp_path, "node-a"))
    assert _reply(old.deliver(encode_envelope(make_envelope(Add(n=5), "f-1")))) == 5
    old.checkpoint(force=True)
    segments = old.ckstore.list_segments("f-1")
    checkpoints = old.ckstore.list_checkpoints("f-1")

    new = AgentCore(_spec(tmp_path, "node-b"))  # another node: restores from the store
    assert new.epoch == old.epoch + 1 and new.restore_report.source == "checkpoint"

    late = _reply(old.deliver(encode_envelope(make_envelope(Add(n=100), "f-1"))))
    assert isinstance(late, Fenced) and late.details["epoch"] == old.epoch
    assert old.lifecycle is AgentState.FENCED
    assert old.state.get("count") == 5, "the late write did not reach even the old node's files"
    with pytest.raises(Fenced):
        old.checkpoint(force=True)
    assert old.ckstore.list_segments("f-1") == segments
    assert old.ckstore.list_checkpoints("f-1") == checkpoints
    assert _reply(new.deliver(encode_envelope(make_envelope(GetCount(), "f-1")))) == 5
    assert _reply(new.deliver(encode_envelope(make_envelope(Add(n=1), "f-1")))) == 6
    old.stop()
    new.stop()


def test_epoch_cutoff_is_the_lowest_restore_point_of_any_newer_epoch():
    cutoff = epoch_cutoff({1: 0, 2: 100, 3: 80, 5: 200})
    assert [cutoff(e) for e in (0, 1, 2, 3, 4)] == [0, 80, 80, 200, 200]
    assert cutoff(5) == cutoff(9) == float("inf")
    assert epoch_cutoff({})(1) == float("inf")


def test_what_a_replaced_incarnation_wrote_past_its_successors_base_is_never_restored(tmp_path):
    """The race fencing cannot close with a plain directory: the old incarnation passed its
    checks just before the new one claimed its epoch, and publishes a segment after.  Later
    restores leave that fork out, from the store and from the old node's local files."""
    quiet = {"ship_interval": 3600, "checkpoint_interval": 3600}  # no background shipping: the test drives it
    old = AgentCore(_spec(tmp_path, "node-a", cls=Laggard, **quiet))
    for _ in range(5):
        _reply(old.deliver(encode_envelope(make_envelope(Add(n=1), "f-1"))))
    old.checkpoint(force=True)
    new = AgentCore(_spec(tmp_path, "node-b", cls=Laggard, **quiet))
    assert _reply(new.deliver(encode_envelope(make_envelope(Add(n=1), "f-1")))) == 6

    # As if the old one had passed its checks just before the claim:
    old.fence.check = old.shipper.fence = lambda where: None
    assert _reply(old.deliver(encode_envelope(make_envelope(Add(n=100), "f-1")))) == 105
    old.shipper.ship()  # the fork reaches the store
    new.shipper.ship()
    new.close_files()  # both processes die
    old.close_files()

    elsewhere = AgentCore(_spec(tmp_path, "node-c", cls=Laggard))
    report = elsewhere.restore_report
    assert report.source == "checkpoint" and any("of epoch 1" in f for f in report.forks), report
    assert _reply(elsewhere.deliver(encode_envelope(make_envelope(Report(), "f-1"))))["count"] == 6
    elsewhere.close_files()

    back_home = AgentCore(_spec(tmp_path, "node-a", cls=Laggard))  # the old node's files went on to 105
    report = back_home.restore_report
    assert report.set_aside and "forked" in report.set_aside, report
    assert any("local state of epoch 1" in f for f in report.forks), report
    assert _reply(back_home.deliver(encode_envelope(make_envelope(Report(), "f-1"))))["count"] == 6
    back_home.stop()


def test_stale_writer_on_the_same_files_is_refused_inside_the_transaction(tmp_path):
    store = LmdbStore(tmp_path / "s", agent_id="x", map_size=16 << 20, sync=False)
    store.take_epoch(1)
    store.commit([])
    with store.env.begin(write=True) as txn:  # what a newer incarnation's take_epoch(2) leaves
        txn.put(b"epoch", _U64.pack(2), db=store._db["meta"])
    with pytest.raises(Fenced, match="taken by epoch 2"):
        store.commit([])
    with pytest.raises(Fenced):
        store.take_epoch(1)
    store.close()


def test_receivers_refuse_messages_and_batches_of_a_replaced_sender(tmp_path):
    receiver = AgentCore(_spec(tmp_path, "node-a", agent="rx"))
    ck = receiver.ckstore
    first = ck.claim_epoch("tx", {})

    def env(n: int, epoch: int, seq: int | None = None):
        e = make_envelope(Add(n=n), "rx", sender="tx", epoch=epoch)
        e.seq = seq
        return e

    assert _reply(receiver.deliver(encode_envelope(env(1, first)))) == 1
    batch = encode_batch(0, [encode_envelope(env(10, first, seq=1))], first)
    assert _reply(receiver.deliver_batch(batch))[0] == 1

    second = ck.claim_epoch("tx", {})  # "tx" was replaced
    refused = _reply(receiver.deliver(encode_envelope(env(100, first))))
    assert isinstance(refused, StaleEpoch) and refused.details == {"sender": "tx", "epoch": first}
    stale_batch = encode_batch(1, [encode_envelope(env(1000, first, seq=2))], first)
    assert isinstance(_reply(receiver.deliver_batch(stale_batch)), StaleEpoch)
    assert _reply(receiver.deliver(encode_envelope(make_envelope(GetCount(), "rx")))) == 11, "no stale effect"

    # The successor sends the same outbox entry again, under its own epoch: accepted once.
    fresh_batch = encode_batch(1, [encode_envelope(env(1000, first, seq=2))], second)
    assert _reply(receiver.deliver_batch(fresh_batch))[0] == 2
    assert _reply(receiver.deliver(encode_envelope(env(1, second)))) == 1012
    assert 'outcome="rejected_StaleEpoch"' in receiver.metrics.text()
    receiver.stop()


def test_a_hung_incarnation_that_wakes_after_its_replacement_is_fenced(ray_session, tmp_path, agent_id):
    """Real actors: the old host hangs in a handler, a spare on "another node" (its own data
    directory, the same checkpoint store) adopts the agent, then the old handler wakes up,
    sends a message and writes its state.  Both are refused; the new incarnation serves."""
    from runtime import System

    ck = tmp_path / "ck"
    node_a = System(tmp_path / "a", checkpoint_dir=ck, create=True)
    node_b = System(tmp_path / "b", checkpoint_dir=ck, create=True)
    peer = node_a.spawn(Counter, f"{agent_id}-peer")
    old = node_a.spawn(Laggard, agent_id, config={"ship_interval": 0.1})
    try:
        old.ask(Add(n=3))
        flag = tmp_path / "wake"
        old.tell(Linger(flag=str(flag), peer=f"{agent_id}-peer"))
        wait_for(lambda: old.admin.status()["handler_running_for"] is not None)

        # The replaced host itself (a ref follows the agent to its new host, for control calls too).
        old_host = old.route.handle
        old_status = lambda: ray.get(old_host.status.remote(), timeout=30)  # noqa: E731
        spare = node_b.spawn_spare()
        new = node_b.adopt(spare, node_b.host_spec(Laggard, agent_id))
        assert new.admin.status()["epoch"] > old_status()["epoch"]
        assert old.admin.status()["pid"] == new.admin.status()["pid"], "the old ref's control calls reach the new host"
        assert new.ask(Report()) == {"late": None, "count": 3}

        flag.touch()  # the old incarnation wakes up
        wait_for(lambda: old_status()["handler_running_for"] is None)
        status = old_status()
        assert status["state"] == "fenced", status
        assert peer.ask(GetCount()) == 0, "the late message had no effect"
        assert 'outcome="rejected_StaleEpoch"' in peer.admin.metrics()
        assert new.ask(Report()) == {"late": None, "count": 3}, "the late write is nowhere"
        assert node_a.lookup(agent_id).route.handle._actor_id == spare._actor_id, "lookups find the new host"
        assert new.ask(Add(n=1)) == 4
    finally:
        node_b.shutdown()
        node_a.shutdown()


def test_the_directory_names_the_newest_epoch_whatever_the_order_of_registration(ray_session, agent_id):
    from runtime import _directory

    ns = "fencing-directory-test"
    _directory.register(agent_id, "successor", 2, namespace=ns)
    _directory.register(agent_id, "replaced", 1, namespace=ns)  # the replaced host, late
    assert _directory.actor_name(agent_id, namespace=ns) == "successor"
    assert _directory.entries(namespace=ns)[agent_id] == "successor"
    _directory.register(agent_id, "third", 3, namespace=ns)  # takes over and clears older records
    _directory.forget(agent_id, "third", namespace=ns)
    assert _directory.actor_name(agent_id, namespace=ns) == agent_id, "no record left: the plain name"
    assert agent_id not in _directory.entries(namespace=ns)
