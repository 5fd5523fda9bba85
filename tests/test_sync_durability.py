"""SYNC durability: nothing an agent sends leaves before the commit that sent it is shipped.

Otherwise a node lost between the commit and its shipment takes the sender's
memory of the message with it while the receiver has already acted on it: the
restored sender handles the retried request again and numbers a second copy
under its new epoch, which the receiver rightly takes for a new message (the
duplicate ``tests/test_node_loss.py`` once caught, one run in a few).

Two agent cores in this process (no actors); the outbox reaches the receiver
through a handle that calls it directly and hands the reply to Ray, as a Ray
call would.
"""

from __future__ import annotations

import time

import pytest
import ray

from protocols import encode_envelope, error_from_wire, make_envelope
from runtime import CheckpointError, NotDurable
from runtime._config import AgentConfig
from runtime._core import AgentCore
from runtime._reply import decode_reply
from runtime._spec import HostSpec

from .agents import Append, Report, Sink
from .node_agents import Relay

#: Shipping only when a commit asks for it (SYNC), never in the background.
SYNC = AgentConfig(durability="sync", ship_interval=3600, checkpoint_interval=3600)


class _Direct:
    """``handle.deliver_batch.remote(blob)`` for an agent core in this process; counts the calls."""

    def __init__(self, core: AgentCore) -> None:
        self.core, self.calls = core, 0
        self.deliver_batch = self

    def remote(self, blob: bytes):
        self.calls += 1
        return ray.put(self.core.deliver_batch(blob))


def _until(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "not within the timeout"
        time.sleep(0.02)


class _Rounds:
    """Counts the dispatcher's offer rounds (each looks at everything ready to send)."""

    def __init__(self, dispatcher) -> None:
        self.dispatcher = dispatcher

    @property
    def n(self) -> int:
        return self.dispatcher.rounds

    def wait(self, more: int = 2) -> None:
        """Until ``more`` further rounds have run (woken each time, not left to its idle wait)."""
        target = self.n + more

        def woken() -> bool:
            self.dispatcher.wake()
            return self.n >= target

        _until(woken)


def _core(tmp_path, agent_id, cls, config=SYNC, *, init=None, resolve=None):
    """An agent core with its own data directory and the shared checkpoint directory ``ck``."""
    for d in (agent_id, "ck"):
        (tmp_path / d).mkdir(exist_ok=True)
    spec = HostSpec(agent_id, cls, str(tmp_path / agent_id), str(tmp_path / "ck"), config=config, init=init or {})
    return AgentCore(spec, resolve=resolve)


def _store_down(monkeypatch, core):
    """``core``'s checkpoint store refuses shipments until the returned callable is called."""
    real_put = core.ckstore.put_segment

    def unreachable(*args, **kwargs):
        raise CheckpointError("checkpoint store unreachable")

    monkeypatch.setattr(core.ckstore, "put_segment", unreachable)
    return lambda: monkeypatch.setattr(core.ckstore, "put_segment", real_put)


@pytest.fixture
def pair(ray_session, tmp_path):
    rx = _core(tmp_path, "rx", Sink)
    rx.ensure_started()
    handle = _Direct(rx)
    tx = _core(tmp_path, "tx", Relay, init={"to": "rx"}, resolve=lambda name: handle)
    yield tx, rx, handle
    tx.stop()
    rx.stop()


def _ask(core, msg, env=None):
    return decode_reply(core.deliver(encode_envelope(env or make_envelope(msg, core.agent_id))))


def test_a_send_waits_in_the_outbox_until_its_commit_is_shipped(pair, monkeypatch):
    tx, rx, handle = pair
    rounds = _Rounds(tx.dispatcher)
    assert _ask(tx, Append(item=0)) == (True, 1)
    _until(lambda: _ask(rx, Report()) == (True, {"count": 1, "dups": 0, "out_of_order": 0}))

    # The checkpoint store becomes unreachable: item 1 commits locally, but is not shipped.
    store_back = _store_down(monkeypatch, tx)
    second = make_envelope(Append(item=1), "tx")
    ok, err = _ask(tx, None, second)
    assert not ok, "a SYNC reply waits for the shipment, which failed"
    err = error_from_wire(err)
    assert isinstance(err, NotDurable), err
    assert "asking again with the same message id is safe" in err.message
    calls = handle.calls
    rounds.wait()  # the dispatcher had every chance to send it: two full rounds since
    assert handle.calls == calls and tx.dispatcher.pending() == {"rx": 1}
    assert _ask(rx, Report()) == (True, {"count": 1, "dups": 0, "out_of_order": 0})
    # Asked again while still unreachable: not handled twice, still not acknowledged.
    ok, err = _ask(tx, None, second)
    assert not ok and isinstance(error_from_wire(err), NotDurable)

    # Reachable again: the same ask is answered (handled once), and the send leaves, once, in order.
    store_back()
    assert _ask(tx, None, second) == (True, 2)
    _until(lambda: _ask(rx, Report()) == (True, {"count": 2, "dups": 0, "out_of_order": 0}))
    _until(lambda: tx.dispatcher.pending() == {})
    assert _ask(tx, Report())[1]["dups"] == 0


def test_a_batch_committed_but_not_shipped_is_not_handled_again_when_resent(ray_session, tmp_path, monkeypatch):
    """The receiver's side: its reply to the batch is ``NotDurable``, so the sender sends it
    again; the receiver already committed it, and must take it for a duplicate."""
    from protocols import encode_batch

    from .agents import Item

    def batch(base, seqs):
        envs = []
        for seq in seqs:
            env = make_envelope(Item(n=seq - 1), "rx", sender="tx")
            env.seq = seq
            envs.append(encode_envelope(env))
        return encode_batch(base, envs)

    rx = _core(tmp_path, "rx", Sink)
    store_back = _store_down(monkeypatch, rx)
    ok, err = decode_reply(rx.deliver_batch(batch(0, [1, 2])))
    assert not ok and isinstance(error_from_wire(err), NotDurable)
    store_back()
    assert decode_reply(rx.deliver_batch(batch(0, [1, 2, 3]))) == (True, [3, []])
    assert _ask(rx, Report()) == (True, {"count": 3, "dups": 0, "out_of_order": 0})
    rx.stop()


def test_sends_held_for_a_commit_the_background_shipped_first_are_released(tmp_path):
    """The background thread may ship a commit between the LMDB commit and ``ship_until``:
    the sends held for it must still be released (no Ray: dispatcher and shipper alone)."""
    from runtime import DirectoryStore
    from runtime._journal import Shipper
    from runtime._outbox import Dispatcher
    from runtime._store import PUT, LmdbStore

    (tmp_path / "ck").mkdir()
    store = LmdbStore(tmp_path / "tx", agent_id="tx", map_size=64 << 20, sync=False)
    dispatcher = Dispatcher(store, agent_id="tx", config=SYNC, resolve=None)
    shipper = Shipper(store, DirectoryStore(tmp_path / "ck"), "tx", on_shipped=dispatcher.shipped)
    seq = store.commit([("data", PUT, b"k", b"v")])
    assert shipper.ship() == seq  # the background thread, first
    dispatcher.published({"rx": 1}, at=seq)
    assert dispatcher.ready == {}
    shipper.ship_until(seq)  # nothing left to ship
    assert dispatcher.ready == {"rx": 1}
    store.close()


def test_a_sender_never_gives_up_on_a_receiver_that_committed_but_cannot_ship(ray_session, tmp_path,
                                                                              monkeypatch):
    """A SYNC receiver's store stays down past the sender's ``max_attempts``: its answers are
    ``NotDurable`` (it committed), so the sender keeps retrying instead of dead-lettering
    messages that took effect; once the store is back, every one is acknowledged, once."""
    rx = _core(tmp_path, "rx", Sink)
    rx.ensure_started()
    handle = _Direct(rx)
    impatient = SYNC.model_copy(update={"max_attempts": 2, "retry_backoff": 0.01, "retry_backoff_max": 0.02})
    tx = _core(tmp_path, "tx", Relay, impatient, init={"to": "rx"}, resolve=lambda name: handle)
    store_back = _store_down(monkeypatch, rx)
    for i in range(3):
        assert _ask(tx, Append(item=i)) == (True, i + 1)
    _until(lambda: handle.calls >= 6 or tx.dispatcher.dead_lettered)  # three times max_attempts
    assert tx.dispatcher.dead_lettered == 0 and tx.dispatcher.pending() == {"rx": 3}
    store_back()
    _until(lambda: tx.dispatcher.pending() == {})
    assert _ask(rx, Report()) == (True, {"count": 3, "dups": 0, "out_of_order": 0})
    assert tx.dispatcher.dead_lettered == 0
    tx.stop()
    rx.stop()


def test_an_ask_rides_out_a_checkpoint_store_outage_within_its_deadline(system, agent_id):
    """A real agent: its checkpoint store refuses shipments for a moment (the agent's journal
    directory is replaced by a file).  The driver's ask is answered ``NotDurable`` meanwhile,
    asks again with the same id, and returns once the store is back: handled once."""
    import shutil
    import threading

    from .agents import Counter, GetItems

    ref = system.spawn(Counter, agent_id, config={"durability": "sync"})
    assert ref.ask(Append(item=0), timeout=20) == 1
    journal = system.checkpoint_dir / agent_id / "journal"
    aside = journal.with_name("journal.aside")
    journal.rename(aside)
    journal.write_bytes(b"not a directory")
    timer = threading.Timer(1.0, lambda: (journal.unlink(), aside.rename(journal)))
    timer.start()
    try:
        t0 = time.monotonic()
        assert ref.ask(Append(item=1), timeout=20) == 2
        assert time.monotonic() - t0 >= 0.9, "answered only once the store was back"
    finally:
        timer.join()
    assert ref.ask(GetItems(), timeout=20) == [0, 1]
    assert 'outcome="not_durable"' in ref.admin.metrics(), "the store really refused: the agent answered NotDurable"
    shutil.rmtree(aside, ignore_errors=True)
