"""The typed key-value view a handler sees as ``self.state``.

Writes go to an in-memory layer, not to LMDB: the host commits the layer,
with its journal records, in one LMDB transaction after the handler returns,
and drops it if the handler raises.  So a handler's changes are atomic with
the handling of its message, and no LMDB write transaction is ever held
across an ``await``.

Reads see the handler's own uncommitted writes first, then committed state.
``with state.transaction():`` opens a nested layer whose writes are kept only
if the block finishes without raising.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from ._codec import decode_value, encode_value
from ._store import DELETE, PUT, LmdbStore, Op
from .exceptions import StateError

__all__ = ["ReadOnlyState", "State"]

_MISSING = object()


class _Layer:
    __slots__ = ("overlay", "ops")

    def __init__(self) -> None:
        # key -> encoded value, or None for a delete
        self.overlay: dict[bytes, bytes | None] = {}
        self.ops: list[Op] = []


def _key(key: str) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"state keys are str, got {type(key).__name__}")
    return key.encode()


class ReadOnlyState:
    """Reads of committed state (or of one LMDB snapshot when given a transaction)."""

    def __init__(self, store: LmdbStore, txn: lmdb.Transaction | None = None) -> None:
        self._store = store
        self._txn = txn

    def _committed(self, k: bytes) -> bytes | None:
        if self._txn is not None:
            return self._txn.get(k, db=self._store._db["data"])
        return self._store.get("data", k)

    def _committed_scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        if self._txn is None:
            return self._store.scan("data", prefix)
        cur = self._txn.cursor(db=self._store._db["data"])
        out = []
        if cur.set_range(prefix):
            for k, v in cur:
                if not k.startswith(prefix):
                    break
                out.append((k, v))
        return out

    def _lookup(self, k: bytes) -> bytes | None:
        return self._committed(k)

    def get(self, key: str, default: Any = None, *, type: Any = None) -> Any:
        """The value under ``key`` (validated into ``type`` if given), or ``default``."""
        raw = self._lookup(_key(key))
        return default if raw is None else decode_value(raw, type)

    def __contains__(self, key: str) -> bool:
        return self._lookup(_key(key)) is not None

    def _merged(self, prefix: bytes) -> dict[bytes, bytes]:
        return dict(self._committed_scan(prefix))

    def scan(self, prefix: str = "", *, type: Any = None) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs whose key starts with ``prefix``, in key order."""
        merged = self._merged(_key(prefix))
        for k in sorted(merged):
            yield k.decode(), decode_value(merged[k], type)

    def keys(self, prefix: str = "") -> list[str]:
        return [k.decode() for k in sorted(self._merged(_key(prefix)))]


class State(ReadOnlyState):
    """Read-write view for one handler invocation (see module docstring)."""

    def __init__(self, store: LmdbStore) -> None:
        super().__init__(store)
        self._layers: list[_Layer] = []

    # -- host side ---------------------------------------------------------

    def begin(self) -> None:
        """Open the layer for one message; the host calls this."""
        self._layers = [_Layer()]

    def take_ops(self) -> list[Op]:
        """Close the message's layer and hand its ops to the host for commit."""
        if len(self._layers) != 1:
            raise StateError("a state transaction is still open at the end of the handler")
        ops = self._layers[0].ops
        self._layers = []
        return ops

    def discard(self) -> None:
        self._layers = []

    # -- handler side --------------------------------------------------------

    def _top(self) -> _Layer:
        if not self._layers:
            raise StateError("state can only be changed while a message, start or stop hook is handled")
        return self._layers[-1]

    def _lookup(self, k: bytes) -> bytes | None:
        for layer in reversed(self._layers):
            v = layer.overlay.get(k, _MISSING)
            if v is not _MISSING:
                return v  # type: ignore[return-value]
        return self._committed(k)

    def _merged(self, prefix: bytes) -> dict[bytes, bytes]:
        merged = dict(self._committed_scan(prefix))
        for layer in self._layers:
            for k, v in layer.overlay.items():
                if k.startswith(prefix):
                    if v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
        return merged

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (msgpack-able data or a pydantic model)."""
        k = _key(key)
        raw = encode_value(value)
        layer = self._top()
        layer.overlay[k] = raw
        layer.ops.append(Op("data", PUT, k, raw))

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it existed."""
        k = _key(key)
        existed = self._lookup(k) is not None
        if existed:
            layer = self._top()
            layer.overlay[k] = None
            layer.ops.append(Op("data", DELETE, k, None))
        return existed

    def increment(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the int under ``key`` (0 if absent); return the new value."""
        value = self.get(key, 0) + by
        self.put(key, value)
        return value

    @contextmanager
    def transaction(self) -> Iterator[State]:
        """A nested all-or-nothing block inside the handler's own transaction."""
        self._top()
        layer = _Layer()
        self._layers.append(layer)
        try:
            yield self
        except BaseException:
            self._layers.pop()
            raise
        self._layers.pop()
        parent = self._layers[-1]
        parent.overlay.update(layer.overlay)
        parent.ops.extend(layer.ops)
