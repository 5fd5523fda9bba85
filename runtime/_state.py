"""The typed key-value view a handler sees as ``self.state``.

Writes go to an in-memory layer, not to LMDB: the host commits the layer,
with its journal records, in one LMDB transaction after the handler returns,
and drops it if the handler raises.  So a handler's changes are atomic with
the handling of its message, and no LMDB write transaction is ever held
across an ``await``.

Reads see the handler's own uncommitted writes first, then committed state:
through the batch's snapshot when the host gives one, else through one of the
view's own, opened at the first read, renewed at a read once the store's
sequence number has moved (another thread's commit: the handler's own changes
commit only after it returns) and closed when its changes are taken or dropped.
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

__all__ = ["Layer", "ReadOnlyState", "State"]

_MISSING = object()


class Layer:
    """Uncommitted changes: state ops, and messages to send once they commit."""

    __slots__ = ("overlay", "ops", "sends")

    def __init__(self) -> None:
        # key -> encoded value, or None for a delete
        self.overlay: dict[bytes, bytes | None] = {}
        self.ops: list[Op] = []
        self.sends: list[Any] = []

    def absorb(self, child: Layer) -> None:
        self.overlay.update(child.overlay)
        self.ops.extend(child.ops)
        self.sends.extend(child.sends)


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
            return self._txn.get(k, db=self._store.db("data"))
        return self._store.get("data", k)

    def _committed_scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        if self._txn is None:
            return self._store.scan("data", prefix)
        cur = self._txn.cursor(db=self._store.db("data"))
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
        raw = self._lookup(key.encode() if key.__class__ is str else _key(key))
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
        self._layers: list[Layer] = []
        # The view's own snapshot for reads between begin and take/discard, and the store's
        # seq when it was opened (a read after a commit renews it).
        self._snap: lmdb.Transaction | None = None
        self._snap_seq = -1
        # While a savepoint is open: key -> its root-overlay value before the
        # savepoint (_MISSING if it had none), to undo a failed message.
        self._undo: dict[bytes, Any] | None = None

    # -- host side ---------------------------------------------------------

    def begin(self, txn: lmdb.Transaction | None = None) -> None:
        """Open the root layer (one message, or one batch); reads of
        committed state go through ``txn`` when given."""
        self._layers = [Layer()]
        self._txn = txn
        self._close_snapshot()

    def push(self) -> None:
        """Open a layer for one message inside a batch."""
        self._layers.append(Layer())

    def pop(self, keep: bool) -> None:
        """Close the innermost layer, folding it into its parent if ``keep``."""
        layer = self._layers.pop()
        if keep:
            if self._undo is not None and len(self._layers) == 1:
                self._remember(layer.overlay)
            self._layers[-1].absorb(layer)

    # Savepoints: the cheap way to make one message of a batch all-or-nothing
    # inside the batch's root layer (no layer per message).

    def savepoint(self) -> tuple[int, int]:
        root = self._layers[0]
        self._undo = {}
        return len(root.ops), len(root.sends)

    def release(self) -> None:
        self._undo = None

    def rollback(self, point: tuple[int, int]) -> None:
        root = self._layers[0]
        del self._layers[1:]
        for k, old in (self._undo or {}).items():
            if old is _MISSING:
                root.overlay.pop(k, None)
            else:
                root.overlay[k] = old
        del root.ops[point[0] :]
        del root.sends[point[1] :]
        self._undo = None

    def _remember(self, keys: Any) -> None:
        undo = self._undo
        overlay = self._layers[0].overlay
        for k in keys:
            if k not in undo:  # type: ignore[operator]
                undo[k] = overlay.get(k, _MISSING)  # type: ignore[index]

    def depth(self) -> int:
        return len(self._layers)

    def take(self) -> Layer:
        """Close the root layer and hand it to the host for commit."""
        if len(self._layers) != 1:
            raise StateError("a state transaction is still open at the end of the handler")
        root = self._layers[0]
        self._layers = []
        self._txn = None
        self._close_snapshot()
        return root

    def take_ops(self) -> list[Op]:
        return self.take().ops

    def discard(self) -> None:
        self._layers = []
        self._txn = None
        self._undo = None
        self._close_snapshot()

    def _close_snapshot(self) -> None:
        if self._snap is not None:
            self._snap.abort()
            self._snap = None

    def _committed(self, k: bytes) -> bytes | None:
        store = self._store
        if self._txn is not None:  # the host's snapshot (a batch)
            return self._txn.get(k, db=store.db("data"))
        if not self._layers:  # outside a handler: nothing closes a snapshot there
            return store.get("data", k)
        if self._snap is None or self._snap_seq != store.seq:
            self._close_snapshot()
            self._snap_seq = store.seq  # read first: a commit in between only makes the snapshot newer
            self._snap = store.read_txn()
        try:
            return self._snap.get(k, db=store.db("data"))
        except lmdb.Error as exc:
            raise StateError(f"read of data/{k!r} failed: {exc}") from exc

    def stage_send(self, recipient: str, envelope: Any) -> None:
        """Queue an outgoing message; it leaves only if this layer commits."""
        self._top().sends.append((recipient, envelope))

    # -- handler side --------------------------------------------------------

    def _top(self) -> Layer:
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
        k = key.encode() if key.__class__ is str else _key(key)
        raw = encode_value(value)
        layer = self._top()
        undo = self._undo
        if undo is not None and k not in undo and len(self._layers) == 1:
            undo[k] = layer.overlay.get(k, _MISSING)
        layer.overlay[k] = raw
        # An Op as a plain tuple: NamedTuple's __new__ is a Python-level call.
        layer.ops.append(("data", PUT, k, raw))  # type: ignore[arg-type]

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it existed."""
        k = _key(key)
        existed = self._lookup(k) is not None
        if existed:
            layer = self._top()
            if self._undo is not None and len(self._layers) == 1 and k not in self._undo:
                self._undo[k] = layer.overlay.get(k, _MISSING)
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
        self.push()
        try:
            yield self
        except BaseException:
            self.pop(keep=False)
            raise
        self.pop(keep=True)
