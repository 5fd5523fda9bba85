"""The LMDB working state: typed values, atomic layers, journal and transition records."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from runtime import StateDecodeError, StateError
from runtime._state import State
from runtime._store import DELETE, PUT, LmdbStore, Op


class Point(BaseModel):
    x: int
    y: int


@pytest.fixture
def store(tmp_path):
    s = LmdbStore(tmp_path / "env", agent_id="a1", map_size=64 << 20, sync=False)
    yield s
    s.close()


def run(state: State, store: LmdbStore, fn):
    state.begin()
    try:
        fn(state)
    except BaseException:
        state.discard()
        raise
    return store.commit(state.take_ops())


def test_values_round_trip_including_pydantic_models(store):
    state = State(store)
    run(state, store, lambda s: (s.put("p", Point(x=1, y=2)), s.put("l", [Point(x=3, y=4)]),
                                 s.put("n", {"a": [1, 2.5, None, b"raw"]})))
    assert state.get("p") == Point(x=1, y=2)
    assert state.get("p", type=Point) == Point(x=1, y=2)
    assert state.get("l", type=list[Point]) == [Point(x=3, y=4)]
    assert state.get("n") == {"a": [1, 2.5, None, b"raw"]}
    assert state.get("missing", "dflt") == "dflt"
    with pytest.raises(StateDecodeError, match="does not validate"):
        state.get("n", type=Point)


def test_handler_sees_its_own_writes_and_a_failure_leaves_no_trace(store):
    state = State(store)
    run(state, store, lambda s: s.put("a", 1))

    def failing(s):
        s.put("a", 2)
        s.put("b", 3)
        assert s.get("a") == 2 and [k for k, _ in s.scan()] == ["a", "b"]
        raise RuntimeError("handler failed")

    seq = store.seq
    with pytest.raises(RuntimeError):
        run(state, store, failing)
    assert store.seq == seq and state.get("a") == 1 and "b" not in state


def test_nested_transaction_is_all_or_nothing(store):
    state = State(store)

    def body(s):
        s.put("kept", 1)
        with pytest.raises(ValueError):
            with s.transaction():
                s.put("dropped", 1)
                s.delete("kept")
                raise ValueError
        with s.transaction():
            s.put("inner", 2)

    run(state, store, body)
    assert state.keys() == ["inner", "kept"]


def test_scan_merges_uncommitted_puts_and_deletes(store):
    state = State(store)
    run(state, store, lambda s: [s.put(f"k/{i}", i) for i in range(5)])

    def body(s):
        s.delete("k/1")
        s.put("k/9", 9)
        s.put("other", 0)
        assert list(s.scan("k/")) == [("k/0", 0), ("k/2", 2), ("k/3", 3), ("k/4", 4), ("k/9", 9)]

    run(state, store, body)


def test_every_op_is_journaled_with_increasing_seq_in_the_same_commit(store):
    state = State(store)
    run(state, store, lambda s: (s.put("a", 1), s.put("a", 2), s.delete("a")))
    records = store.journal_since(0)
    assert [(r.seq, r.table, r.kind, r.key) for r in records] == [
        (1, "data", PUT, b"a"), (2, "data", PUT, b"a"), (3, "data", DELETE, b"a")
    ]
    transitions = store.transitions_window()[1]
    assert [(t["agent"], t["seq"], t["op"], t["key"]) for t in transitions] == [
        ("a1", 1, "put", b"a"), ("a1", 2, "put", b"a"), ("a1", 3, "delete", b"a")
    ]


def test_replay_skips_what_is_already_applied(tmp_path, store):
    state = State(store)
    run(state, store, lambda s: [s.put(f"k{i}", i) for i in range(10)])
    records = store.journal_since(0)
    other = LmdbStore(tmp_path / "other", agent_id="a1", map_size=64 << 20, sync=False)
    assert other.replay(records[:4]) == 4
    assert other.replay(records) == 6, "overlap is skipped"
    assert other.seq == 10 and State(other).get("k9") == 9
    other.close()


def test_writes_outside_a_handler_are_refused(store):
    with pytest.raises(StateError, match="only be changed while"):
        State(store).put("a", 1)


def test_unknown_table_is_refused(store):
    with pytest.raises(StateError, match="not a journaled table"):
        store.commit([Op("meta", PUT, b"x", b"y")])


def test_savepoint_rolls_back_one_message_inside_a_batch(store):
    state = State(store)
    state.begin()
    point = state.savepoint()
    state.put("a", 1)
    state.release()
    point = state.savepoint()
    state.put("a", 2)
    state.put("b", 3)
    with state.transaction():
        state.put("c", 4)
    state.rollback(point)
    point = state.savepoint()
    state.put("d", 5)
    state.release()
    store.commit(state.take_ops())
    assert State(store).keys() == ["a", "d"] and State(store).get("a") == 1
