"""Canonical bytes: equal data, equal bytes, whatever order its maps were built in."""

from __future__ import annotations

import enum
import random

import msgpack
import ormsgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import canonical_bytes
from protocols._canonical import _NATIVE, slow_canonical_bytes

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


# Exactly what the native path takes: str keys, ints within 64 bits, any floats and text.
NATIVE_DATA = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=24,
)


@settings(max_examples=300, deadline=None)
@given(NATIVE_DATA)
def test_the_native_encoder_gives_the_python_paths_bytes(value):
    # Called directly, not through canonical_bytes: a refusal here fails instead of falling back.
    assert ormsgpack.packb(value, option=_NATIVE) == slow_canonical_bytes(value)


class Colour(str, enum.Enum):
    RED = "red"


class Tagged(dict):
    pass


@pytest.mark.parametrize("value", [2**64, -2**63 - 1, {1: "int key"}, {"c": Colour.RED}, Tagged(b=1, a=2),
                                   {"n": [1, {"deep": 2**70}]}])
def test_what_the_native_encoder_refuses_falls_back_to_the_same_bytes(value):
    with pytest.raises(TypeError):
        ormsgpack.packb(value, option=_NATIVE)
    assert canonical_bytes(value) == slow_canonical_bytes(value)
