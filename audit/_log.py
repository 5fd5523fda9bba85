"""The audit log on disk: append records, sync them, sign checkpoints, hand each one to anchors.

:class:`AuditLog` is the writer of one log directory (layout and framing in
:mod:`audit._files`).  One writer per directory: nothing here locks it.

Durability, exactly:

- :meth:`AuditLog.append` encodes the record, links it and adds it to the
  tree at once, but its bytes sit in this process's buffer: a crash may lose
  them, or leave a torn last record.
- :meth:`AuditLog.sync` writes every buffered record and fsyncs the file:
  when it returns, every record appended before it is durable.
- :meth:`AuditLog.checkpoint` (called by ``append`` every ``checkpoint_every``
  records) syncs first, then writes the signed checkpoint atomically, then
  gives its text to each anchor in turn.  So a checkpoint on disk never names
  a record that is not durable.

Invariants:

- The records file only grows, and only by whole frames; this class never
  truncates a record that a sync completed (only what a sync of its own that
  failed half-way left, before the next sync writes).  A torn tail found on opening is reported
  (:class:`~audit.TornRecord`) and cut only by :func:`repair_log`.
- Reopening resumes from the file: the chain and the tree continue from its
  last record, after :func:`~audit.verify_chain` found every record good and
  the newest checkpoint (if this key signed it) matches the tree.
- Only :class:`~audit.AuditError` subclasses leave this module.

An *anchor* is any callable taking the new checkpoint's note text; it runs
after the checkpoint is on disk, in the writer's thread.  If it raises, the
remaining anchors still run and :class:`~audit.AnchorFailed` is raised at the
end.  :class:`DirectoryAnchor` copies each note into a second directory; a
webhook is a user's anchor, e.g.
``lambda note: httpx.post(url, content=note, timeout=5).raise_for_status()``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from ._chain import Chain, Record, decode_record, verify_chain
from ._files import CHECKPOINTS, RECORDS, checkpoint_name, frame, list_checkpoints, read_records, write_atomic
from ._keys import SigningKey
from ._merkle import Frontier, leaf_hash
from ._note import Checkpoint, open_checkpoint, parse_note, sign_checkpoint
from .exceptions import AnchorFailed, AuditError, LogStorageError, TamperDetected, TornRecord

__all__ = ["Anchor", "AuditLog", "DirectoryAnchor", "repair_log"]

#: A checkpoint's destination besides the log: called with each new signed note's text.
Anchor = Callable[[str], Any]


class DirectoryAnchor:
    """An anchor that copies each checkpoint into ``path`` (created if missing), under the same file name."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __call__(self, note: str) -> None:
        size = Checkpoint.parse(parse_note(note).text).size
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogStorageError(f"cannot create {self.path}: {exc}", path=str(self.path)) from exc
        write_atomic(self.path / checkpoint_name(size), note.encode("utf-8"))


def repair_log(directory: str | os.PathLike[str]) -> int:
    """Cut a torn last record off the records file; how many bytes were cut (0 when there was none).

    Only bytes after the last complete frame go: a record that was never
    whole, so never synced, so never under a checkpoint.
    """
    _, tail = read_records(directory)
    if tail is None:
        return 0
    path = Path(directory) / RECORDS
    try:
        with open(path, "r+b") as f:
            f.truncate(tail.offset)
            os.fsync(f.fileno())
    except OSError as exc:
        raise LogStorageError(f"cannot repair {path}: {exc}", path=str(path)) from exc
    return tail.size


class AuditLog:
    """The writer of the audit log in ``directory`` (created if missing): append, sync, checkpoint.

    ``key`` signs checkpoints; with ``None`` no checkpoint is written (the log
    is then a chain and a tree only, and a cut-off tail goes unseen).
    ``origin`` names the log in its checkpoints.  ``clock`` gives each
    record's time.  A checkpoint is written every ``checkpoint_every`` records
    and on :meth:`checkpoint`; ``anchors`` get each one.
    """

    def __init__(self, directory: str | os.PathLike[str], key: SigningKey | None, origin: str, *,
                 clock: Callable[[], float] = time.time, checkpoint_every: int = 1000,
                 anchors: Iterable[Anchor] = ()) -> None:
        if checkpoint_every < 1:
            raise AuditError(f"checkpoint_every is at least 1, got {checkpoint_every}")
        self.directory = Path(directory)
        self.origin = origin
        self._key = key
        self._clock = clock
        self._every = checkpoint_every
        self._anchors = tuple(anchors)
        self._buffer = bytearray()
        self._last_checkpoint = 0
        try:
            (self.directory / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogStorageError(f"cannot create {self.directory}: {exc}", path=str(self.directory)) from exc
        self._chain = self._resume()
        try:  # created if missing; _resume found no torn tail: the file is whole records
            os.close(os.open(self.directory / RECORDS, os.O_WRONLY | os.O_CREAT, 0o644))
            self._on_disk = (self.directory / RECORDS).stat().st_size
        except OSError as exc:
            raise LogStorageError(f"cannot open {self.directory / RECORDS}: {exc}") from exc

    def _resume(self) -> Chain:
        """The chain as the file leaves it; refuses a torn tail, a bad record, or a checkpoint the file contradicts."""
        records, tail = read_records(self.directory)
        if tail is not None:
            raise TornRecord(f"{self.directory / RECORDS} ends in a torn record {tail.index} ({tail.size} bytes at "
                             f"offset {tail.offset}): run repair_log if a crash left it", index=tail.index,
                             offset=tail.offset)
        checkpoints = list_checkpoints(self.directory)
        newest = checkpoints[-1][0] if checkpoints else 0
        report = verify_chain(records, roots_at=(newest,)).check()
        if self._key is not None and checkpoints:
            try:
                cp = open_checkpoint(checkpoints[-1][1].read_bytes(), self._key.verifier, origin=self.origin)
            except OSError as exc:
                raise LogStorageError(f"cannot read {checkpoints[-1][1]}: {exc}") from exc
            if cp.size > report.good:
                raise TamperDetected(f"the log has {report.good} records, behind its checkpoint of {cp.size}",
                                     index=report.good, reason="truncated")
            if report.roots[cp.size] != cp.root:
                raise TamperDetected(f"the records do not hash to checkpoint {cp.size}'s root", index=cp.size,
                                     reason="root-mismatch")
        self._last_checkpoint = newest
        self._last_raw: bytes | None = records[-1] if records else None
        frontier = Frontier()
        for raw in records:
            frontier.append(leaf_hash(raw))
        return Chain(report.good, report.head, frontier.nodes)

    @property
    def size(self) -> int:
        """Records appended so far (synced or not)."""
        return self._chain.size

    @property
    def last(self) -> Record | None:
        """The newest record, decoded (None for an empty log): where a writer that resumes stands."""
        return None if self._last_raw is None else decode_record(self._last_raw)

    def root(self) -> bytes:
        """The tree head over every record appended so far."""
        return self._chain.root()

    def append(self, kind: str, body: Any, *, time: float | None = None) -> int:
        """Add a record (``kind``, ``body``, ``time`` or the clock's); its index.  Durable after the next :meth:`sync`.

        When it completes a checkpoint, an :class:`~audit.AnchorFailed` from
        it means the record *was* appended and the checkpoint written.
        """
        raw = self._chain.append(kind, body, float(self._clock() if time is None else time))
        self._buffer += frame(raw)
        self._last_raw = raw
        index = self._chain.size - 1
        if self._key is not None and self._chain.size - self._last_checkpoint >= self._every:
            self.checkpoint()
        return index

    def sync(self) -> None:
        """Write the buffered records and fsync: every record appended so far is durable when this returns."""
        if not self._buffer:
            return
        path = self.directory / RECORDS
        try:
            # Opened per sync, not held: no file stays open for writing between syncs (a shared
            # mount can be remounted, a node's handles do not linger).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size > self._on_disk:
                    os.ftruncate(fd, self._on_disk)  # what a failed sync of ours left half-written
                os.lseek(fd, self._on_disk, os.SEEK_SET)
                # The buffer itself, exported only for the call (a view kept across a failed write
                # would pin it: the next sync could not clear it); a partial write, rare, copies the rest.
                written = os.write(fd, self._buffer)
                while written < len(self._buffer):
                    written += os.write(fd, self._buffer[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise LogStorageError(f"cannot append to {path}: {exc}") from exc
        self._on_disk += len(self._buffer)
        self._buffer.clear()

    def checkpoint(self) -> str | None:
        """Sync, sign the tree head, write it, anchor it; the note (None without a key).

        A checkpoint of a size already written is not written again.
        """
        if self._key is None:
            return None
        self.sync()
        size = self._chain.size
        note = sign_checkpoint(Checkpoint(self.origin, size, self._chain.root()), self._key)
        path = self.directory / CHECKPOINTS / checkpoint_name(size)
        if path.exists():
            return note
        write_atomic(path, note.encode("utf-8"))
        self._last_checkpoint = size
        self._anchor(note)
        return note

    def _anchor(self, note: str) -> None:
        failures = []
        for anchor in self._anchors:
            try:
                anchor(note)
            except Exception as exc:  # noqa: BLE001 - an anchor is user code: any failure, reported once all ran
                failures.append(exc)
        if failures:
            raise AnchorFailed(f"{len(failures)} anchor(s) failed: {failures[0]!r}",
                               errors=[repr(e) for e in failures]) from failures[0]

    def close(self) -> None:
        """Sync (no checkpoint: call :meth:`checkpoint` first to sign the tail)."""
        self.sync()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
