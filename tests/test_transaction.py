"""``runtime._transaction``: one handler call's changes, sends and records, all or nothing (real LMDB)."""

from __future__ import annotations

from protocols import make_envelope
from runtime._state import State
from runtime._store import PUT, LmdbStore, Op
from runtime._transaction import Transaction

from .agents import Add


def _txn(tmp_path) -> tuple[LmdbStore, Transaction]:
    store = LmdbStore(tmp_path / "db", agent_id="t", map_size=1 << 24, sync=False)
    return store, Transaction(State(store))


def test_a_savepoint_rolls_back_state_sends_and_records_made_after_it(tmp_path):
    store, txn = _txn(tmp_path)
    txn.begin()
    txn.state.put("kept", 1)
    txn.send("peer", make_envelope(Add(n=1), "peer"))
    txn.record(Op("meta", PUT, b"kept", b"1"))
    point = txn.savepoint()
    txn.state.put("dropped", 2)
    txn.send("peer", make_envelope(Add(n=2), "peer"))
    txn.record(Op("meta", PUT, b"dropped", b"2"))
    txn.rollback(point)
    layer, records = txn.take()
    assert [op[2] for op in layer.ops] == [b"kept"]
    assert [env.recipient for _, env in layer.sends] == ["peer"] and len(layer.sends) == 1
    assert records == [Op("meta", PUT, b"kept", b"1")]
    assert not txn.is_open()
    store.close()


def test_discard_drops_everything_and_the_next_transaction_starts_empty(tmp_path):
    store, txn = _txn(tmp_path)
    txn.begin()
    txn.state.put("a", 1)
    txn.record(Op("meta", PUT, b"a", b"1"))
    assert txn.is_open()
    txn.discard()
    assert not txn.is_open()
    txn.begin()
    layer, records = txn.take()
    assert layer.ops == [] and layer.sends == [] and records == []
    store.close()


def test_send_is_one_bound_method_for_the_hosts_life(tmp_path):
    # The handling thread compares the current stage by identity: a new object per call would reset it every message.
    store, txn = _txn(tmp_path)
    assert txn.send is txn.send
    txn.begin()
    first = txn.send
    txn.take()
    txn.begin()
    assert txn.send is first
    txn.discard()
    store.close()
