"""Canonical bytes: one encoding of data that is equal wherever it is made.

:func:`canonical_bytes` is msgpack with every map's keys sorted, so equal
data gives equal bytes in any process, whatever order its dicts were built
in: what a digest or a signature is computed over (an action's arguments, an
approval's binding, an audit record).  An int msgpack cannot hold (outside 64
bits) is an ext value of its decimal digits, so any int pydantic accepts can
be digested.

Invariant: ``canonical_bytes(a) == canonical_bytes(b)`` whenever ``a == b``
as data (maps compared as maps, lists and tuples as sequences).

Two encoders, one result: ``ormsgpack`` (native, with sorted keys) takes the
common case -- plain dicts with str keys, lists, tuples, str, bytes, numbers
within 64 bits, bools and None -- in about a quarter of the time; anything
else (a big int, a non-str key, a subclass, an enum) it refuses, and the
Python path below encodes it.  Both give the same bytes wherever both apply
(``tests/test_canonical`` checks them against each other on generated data):
UTF-8 byte order, by which ``ormsgpack`` sorts, is code point order, by which
Python sorts str.
"""

from __future__ import annotations

from typing import Any

import msgpack
import ormsgpack

__all__ = ["canonical_bytes"]

#: msgpack ext type of an int outside 64 bits, written as its decimal digits.
_BIG_INT = 1


_PLAIN = frozenset({str, float, bool, type(None), bytes})
_INT64_MIN, _UINT64_END = -2**63, 2**64


def _sorted(value: Any) -> Any:
    # Exact types first (the common, flat case: no recursion, no isinstance); then subclasses.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        return value if _INT64_MIN <= value < _UINT64_END else msgpack.ExtType(_BIG_INT, str(value).encode())
    if kind is dict:
        return {k: (v if type(v) in _PLAIN else _sorted(v)) for k, v in sorted(value.items())}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else _sorted(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT64_MIN <= value < _UINT64_END:
        return msgpack.ExtType(_BIG_INT, str(value).encode())
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


#: Native encoding with sorted keys of exact built-in types only: everything else is a TypeError,
#: for the Python path (``OPT_PASSTHROUGH_*`` without a ``default``).
_NATIVE = (ormsgpack.OPT_SORT_KEYS | ormsgpack.OPT_PASSTHROUGH_SUBCLASS | ormsgpack.OPT_PASSTHROUGH_BIG_INT
           | ormsgpack.OPT_PASSTHROUGH_ENUM | ormsgpack.OPT_PASSTHROUGH_DATACLASS
           | ormsgpack.OPT_PASSTHROUGH_DATETIME | ormsgpack.OPT_PASSTHROUGH_UUID)


def canonical_bytes(value: Any) -> bytes:
    """msgpack of ``value`` with every dict's keys sorted (see module docstring)."""
    try:
        return ormsgpack.packb(value, option=_NATIVE)
    except TypeError:  # ormsgpack.MsgpackEncodeError included: what the native path refuses
        return slow_canonical_bytes(value)


def slow_canonical_bytes(value: Any) -> bytes:
    """The Python path of :func:`canonical_bytes`: the same bytes, for any value it takes."""
    return msgpack.packb(_sorted(value), use_bin_type=True)
