"""Hash-chained records (``audit._chain``): encoding, links, and the first bad record of a tampered log."""

from __future__ import annotations

import pickle
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import (
    GENESIS,
    Chain,
    Fault,
    Record,
    TamperDetected,
    TreeStore,
    decode_record,
    leaf_hash,
    root_of,
    verify_chain,
)
from protocols import canonical_bytes
from protocols import error_from_wire

T0 = 1_700_000_000.0
N = 10


def log(n: int = N) -> list[bytes]:
    chain = Chain()
    return [chain.append("test.event", {"n": i, "who": f"agent-{i % 3}"}, T0 + i) for i in range(n)]


def rewrite(raw: bytes, **changes) -> bytes:
    """The record with some fields changed, canonically re-encoded (a careful forger's edit)."""
    return replace(decode_record(raw), **changes).encode()


# -- encoding and links --------------------------------------------------------------------------


def test_a_record_is_the_canonical_msgpack_of_its_five_fields():
    chain = Chain()
    raw = chain.append("action.intent", {"b": 2, "a": [1, {"z": 0, "y": b"\x00"}]}, T0)
    assert raw == canonical_bytes({"time": T0, "prev_hash": GENESIS, "kind": "action.intent", "index": 0,
                                   "body": {"a": [1, {"y": b"\x00", "z": 0}], "b": 2}})
    assert list(msgpack.unpackb(raw)) == ["body", "index", "kind", "prev_hash", "time"]  # keys sorted
    assert decode_record(raw) == Record(0, T0, "action.intent", {"a": [1, {"y": b"\x00", "z": 0}], "b": 2}, GENESIS)
    assert decode_record(raw).encode() == raw


def test_each_record_links_to_the_hash_of_the_one_before_which_is_its_leaf_hash():
    raws = log()
    for before, after in zip(raws, raws[1:]):
        assert decode_record(after).prev_hash == leaf_hash(before)
    chain = Chain()
    for i in range(N):
        chain.append("test.event", {"n": i, "who": f"agent-{i % 3}"}, T0 + i)
    assert chain.head == leaf_hash(raws[-1])
    assert chain.root() == root_of([leaf_hash(r) for r in raws]) == TreeStore(map(leaf_hash, raws)).root()


def test_equal_bodies_in_any_key_order_give_equal_bytes():
    one, two = Chain(), Chain()
    assert one.append("k", {"a": 1, "b": {"c": 2, "d": 3}}, T0) == two.append("k", {"b": {"d": 3, "c": 2}, "a": 1}, T0)


def test_a_chain_resumes_from_its_state_as_if_never_stopped():
    whole = Chain()
    first = [whole.append("k", i, T0 + i) for i in range(13)]
    part = Chain()
    for i in range(6):
        part.append("k", i, T0 + i)
    resumed = Chain(*part.state())
    assert [resumed.append("k", i, T0 + i) for i in range(6, 13)] == first[6:]
    assert resumed.root() == whole.root() and resumed.head == whole.head


@pytest.mark.parametrize("kind, now", [("", T0), (3, T0), ("k", float("nan")), ("k", float("inf"))])
def test_append_refuses_an_empty_kind_and_a_time_that_is_not_finite(kind, now):
    with pytest.raises(ValueError):
        Chain().append(kind, {}, now)


def test_a_chain_state_must_be_consistent():
    with pytest.raises(ValueError):
        Chain(0, b"\x01" * 32)
    with pytest.raises(ValueError):
        Chain(1, GENESIS, [b"\x00" * 32])


@pytest.mark.parametrize("raw", [
    b"\xc1",                                                           # not msgpack
    msgpack.packb([1, 2]),                                             # not a map
    msgpack.packb({"index": 0, "time": T0, "kind": "k", "body": 1}),   # a field missing
    canonical_bytes({"body": 1, "index": -1, "kind": "k", "prev_hash": GENESIS, "time": T0}),
    canonical_bytes({"body": 1, "index": 0, "kind": "", "prev_hash": GENESIS, "time": T0}),
    canonical_bytes({"body": 1, "index": 0, "kind": "k", "prev_hash": b"short", "time": T0}),
    canonical_bytes({"body": 1, "index": 0, "kind": "k", "prev_hash": GENESIS, "time": "noon"}),
    canonical_bytes({"body": 1, "index": True, "kind": "k", "prev_hash": GENESIS, "time": T0}),
    canonical_bytes({"body": 1, "extra": 1, "index": 0, "kind": "k", "prev_hash": GENESIS, "time": T0}),
])
def test_bytes_that_hold_no_record_are_refused(raw):
    with pytest.raises(ValueError):
        decode_record(raw)


# -- an untouched log ---------------------------------------------------------------------------


def test_an_untouched_log_verifies_with_its_tree_heads():
    raws = log(100)
    store = TreeStore(map(leaf_hash, raws))
    report = verify_chain(raws, roots_at=[0, 1, 37, 64, 100, 101])
    assert report.ok and report.check() is report
    assert (report.read, report.good, report.head) == (100, 100, leaf_hash(raws[-1]))
    assert report.root == store.root()
    assert report.roots == {s: store.root(s) for s in (0, 1, 37, 64, 100)}  # 101 was never reached
    assert verify_chain([]).ok and verify_chain([]).head == GENESIS


# -- tampering: the first bad record and why ------------------------------------------------------


def modify_body(raws, k):
    raws[k] = rewrite(raws[k], body={"n": -1})


def modify_prev(raws, k):
    raws[k] = rewrite(raws[k], prev_hash=b"\xee" * 32)


def modify_index(raws, k):
    raws[k] = rewrite(raws[k], index=k + 100)


def garble(raws, k):
    raws[k] = raws[k][:-5]


def delete(raws, k):
    del raws[k]


def insert_copy_of_first(raws, k):
    raws.insert(k, raws[0])


def insert_copy_of_last(raws, k):
    raws.insert(k, raws[-1])


def insert_linked_forgery(raws, k):
    """A record forged to fit in place k: the right index, and linked to the record before it."""
    prev = leaf_hash(raws[k - 1]) if k else GENESIS
    raws.insert(k, Record(k, T0 + k, "test.event", {"forged": True}, prev).encode())


def insert_linked_branch(raws, k):
    """Two records forged to fit in place k and k + 1, each linked to the one before it."""
    prev = leaf_hash(raws[k - 1]) if k else GENESIS
    first = Record(k, T0 + k, "test.event", {"forged": 1}, prev).encode()
    second = Record(k + 1, T0 + k, "test.event", {"forged": 2}, leaf_hash(first)).encode()
    raws[k:k] = [first, second]


def insert_unlinked_forgery(raws, k):
    raws.insert(k, Record(k, T0 + k, "test.event", {"forged": True}, b"\x11" * 32).encode())


def insert_stray(raws, k):
    raws.insert(k, Record(999, T0, "test.event", {"stray": True}, b"\x22" * 32).encode())


def insert_stale_stray(raws, k):
    """A record claiming an early index that links to nothing before it."""
    raws.insert(k, Record(1, T0, "test.event", {"stray": True}, b"\x33" * 32).encode())


def swap_with_next(raws, k):
    raws[k], raws[k + 1] = raws[k + 1], raws[k]


def move_to_end(raws, k):
    raws.append(raws.pop(k))


def move_last_here(raws, k):
    raws.insert(k, raws.pop())


LAST = N - 1
MATRIX = [
    # (tampering, place, expected first bad index, expected fault)
    (modify_body, 0, 0, Fault.MODIFIED),
    (modify_body, 4, 4, Fault.MODIFIED),
    (modify_body, LAST - 1, LAST - 1, Fault.MODIFIED),
    (modify_prev, 0, 0, Fault.MODIFIED),
    (modify_prev, 4, 4, Fault.MODIFIED),
    (modify_index, 0, 0, Fault.MODIFIED),
    (modify_index, 4, 4, Fault.MODIFIED),
    (modify_index, LAST, LAST, Fault.MODIFIED),
    (garble, 0, 0, Fault.MALFORMED),
    (garble, 4, 4, Fault.MALFORMED),
    (garble, LAST, LAST, Fault.MALFORMED),
    (delete, 0, 0, Fault.DELETED),
    (delete, 4, 4, Fault.DELETED),
    (delete, LAST - 1, LAST - 1, Fault.DELETED),
    (insert_copy_of_first, 1, 1, Fault.INSERTED),
    (insert_copy_of_first, 5, 5, Fault.INSERTED),
    (insert_copy_of_first, N, N, Fault.INSERTED),
    (insert_copy_of_last, 0, 0, Fault.INSERTED),
    (insert_copy_of_last, 4, 4, Fault.INSERTED),
    (insert_linked_forgery, 0, 0, Fault.INSERTED),
    (insert_linked_forgery, 4, 4, Fault.INSERTED),
    (insert_linked_branch, 0, 0, Fault.INSERTED),
    (insert_linked_branch, 4, 4, Fault.INSERTED),
    (insert_unlinked_forgery, 0, 0, Fault.INSERTED),
    (insert_unlinked_forgery, 4, 4, Fault.INSERTED),
    (insert_unlinked_forgery, LAST, LAST, Fault.INSERTED),
    (insert_stray, 0, 0, Fault.INSERTED),
    (insert_stray, 4, 4, Fault.INSERTED),
    # At the end nothing follows to tell a stray record from the survivor of a deletion.
    (insert_stray, N, N, Fault.DELETED),
    (insert_stale_stray, 5, 5, Fault.INSERTED),
    (swap_with_next, 0, 0, Fault.REORDERED),
    (swap_with_next, 4, 4, Fault.REORDERED),
    (swap_with_next, LAST - 1, LAST - 1, Fault.REORDERED),
    (move_to_end, 0, 0, Fault.REORDERED),
    (move_to_end, 3, 3, Fault.REORDERED),
    (move_last_here, 0, 0, Fault.REORDERED),
    (move_last_here, 5, 5, Fault.REORDERED),
]


@pytest.mark.parametrize("tamper, place, index, fault", MATRIX,
                         ids=[f"{t.__name__}@{p}" for t, p, _, _ in MATRIX])
def test_the_first_bad_record_is_found_at_its_index_with_its_fault(tamper, place, index, fault):
    original = log()
    raws = list(original)
    tamper(raws, place)
    report = verify_chain(raws, roots_at=range(N + 2))
    assert report.tamper is not None, "tampering went unnoticed"
    assert (report.tamper.index, report.tamper.fault) == (index, fault), report.tamper.detail
    # What comes before the bad record is intact, and the report's heads are those of that prefix.
    assert report.good == index
    assert report.root == root_of([leaf_hash(r) for r in original[:index]])
    assert report.head == (leaf_hash(original[index - 1]) if index else GENESIS)
    assert max(report.roots) == index
    with pytest.raises(TamperDetected) as info:
        report.check()
    assert (info.value.index, info.value.reason) == (index, fault.value)


def test_what_the_chain_cannot_see_its_tree_head_does():
    original = log()
    signed_root = verify_chain(original).root
    for tamper in (modify_body, modify_prev):  # the last record: nothing links to it
        raws = list(original)
        tamper(raws, LAST)
        report = verify_chain(raws)
        if report.ok:
            assert report.root != signed_root
        else:  # a changed link of the last record is seen, but blamed on the one before (two suspects)
            assert tamper is modify_prev and report.tamper == replace(report.tamper, index=LAST - 1)
    cut = verify_chain(original[:-3])  # cut short: it verifies, but is smaller than what was signed
    assert cut.ok and cut.good == N - 3 and cut.root != signed_root


def test_a_record_moved_further_than_the_look_ahead_reads_as_deleted():
    raws = log()
    move_to_end(raws, 1)
    assert verify_chain(raws).tamper.fault is Fault.REORDERED
    near = verify_chain(raws, window=2).tamper
    assert (near.index, near.fault) == (1, Fault.DELETED)


def test_tamper_detected_crosses_the_wire_and_pickling_with_its_index_and_reason():
    raws = log()
    delete(raws, 3)
    error = verify_chain(raws).tamper.error()
    for copy in (error_from_wire(error.to_wire()), pickle.loads(pickle.dumps(error))):
        assert type(copy) is TamperDetected and (copy.index, copy.reason) == (3, "deleted")


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(min_value=3, max_value=40), st.data())
def test_any_single_tampering_before_the_last_record_is_found_at_its_place(n, data):
    original = log(n)
    tamper = data.draw(st.sampled_from([modify_body, modify_prev, modify_index, garble, delete,
                                        insert_copy_of_first, insert_linked_forgery, insert_unlinked_forgery,
                                        insert_stray, swap_with_next, move_to_end]))
    place = data.draw(st.integers(min_value=1 if tamper is insert_copy_of_first else 0, max_value=n - 2))
    raws = list(original)
    tamper(raws, place)
    report = verify_chain(raws)
    assert report.tamper is not None and report.tamper.index == place, (tamper.__name__, report.tamper)
