"""Canonical bytes: equal data, equal bytes, whatever order its maps were built in."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import canonical_bytes

DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6) | st.binary(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=16,
)


def _shuffled(value):
    if isinstance(value, dict):
        items = [(k, _shuffled(v)) for k, v in value.items()]
        random.Random(len(items)).shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return tuple(_shuffled(v) for v in value)  # a tuple encodes as the list it equals
    return value


@settings(max_examples=100, deadline=None)
@given(DATA)
def test_equal_data_in_any_map_order_gives_equal_bytes(value):
    assert canonical_bytes(_shuffled(value)) == canonical_bytes(value)


def test_maps_are_sorted_at_every_depth_and_big_ints_are_their_digits():
    assert msgpack.unpackb(canonical_bytes({"b": {"d": 1, "c": 2}, "a": [3]}), strict_map_key=False) == \
        {"a": [3], "b": {"c": 2, "d": 1}}
    assert list(msgpack.unpackb(canonical_bytes({"b": 1, "a": 2}))) == ["a", "b"]
    big = msgpack.unpackb(canonical_bytes(2**70))
    assert big == msgpack.ExtType(1, str(2**70).encode())
    assert canonical_bytes(True) != canonical_bytes(1), "a bool is not the int it equals"
