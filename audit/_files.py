"""The audit log's files: the framed ``records`` file and the ``checkpoints/`` directory.

Layout of a log directory::

    <dir>/records                              every record, in order, each framed
    <dir>/checkpoints/00000000000000001000.note  the signed checkpoint of tree size 1000

Framing: each record is a 4-byte big-endian length followed by that many
bytes, the record exactly as :class:`~audit.Chain` encoded it.  Nothing else
is in the file: no header, no padding, no index.

A checkpoint file is named by its tree size, zero-padded to
:data:`SIZE_DIGITS` digits so names sort as sizes, with the suffix ``.note``;
it holds one signed note (:mod:`audit._note`).  It is written to a temporary
name beginning with ``.`` and renamed into place, so a reader sees a whole
note or none.

Invariants:

- :func:`read_records` returns every *complete* frame and, separately, a
  :class:`Tail` for bytes after the last one (a torn record); it never drops
  bytes silently.
- Every ``OSError`` leaves this module as :class:`~audit.LogStorageError`,
  with the file's path in the message and the cause chained.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .exceptions import LogStorageError

__all__ = ["CHECKPOINTS", "RECORDS", "SIZE_DIGITS", "Tail", "checkpoint_name", "frame", "list_checkpoints",
           "read_records", "write_atomic"]

#: The records file's name in a log directory.
RECORDS = "records"
#: The checkpoints' directory's name in a log directory.
CHECKPOINTS = "checkpoints"
#: Digits of a checkpoint file's name (enough for any 64-bit size).
SIZE_DIGITS = 20
#: A frame's length prefix, and the largest record it admits.
PREFIX = 4
MAX_RECORD = (1 << 32) - 1

_NAME = re.compile(rf"([0-9]{{{SIZE_DIGITS}}})\.note")


def frame(raw: bytes) -> bytes:
    """The record framed for the file: 4-byte big-endian length, then the bytes."""
    if len(raw) > MAX_RECORD:
        raise ValueError(f"a record is at most {MAX_RECORD} bytes")
    return len(raw).to_bytes(PREFIX, "big") + raw


@dataclass(frozen=True, slots=True)
class Tail:
    """Bytes after the last complete frame: a torn record ``index`` starting at ``offset``, ``size`` bytes long."""

    index: int
    offset: int
    size: int


def read_records(directory: str | os.PathLike[str]) -> tuple[list[bytes], Tail | None]:
    """Every complete record of the log in ``directory``, and the torn tail if the file has one.

    A missing records file is an empty log.
    """
    path = Path(directory) / RECORDS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not Path(directory).is_dir():
            raise LogStorageError(f"{directory} is not a directory", path=str(directory)) from None
        return [], None
    except OSError as exc:
        raise LogStorageError(f"cannot read {path}: {exc}", path=str(path)) from exc
    records: list[bytes] = []
    offset, end = 0, len(data)
    view = memoryview(data)
    while offset < end:
        if end - offset < PREFIX:
            break
        n = int.from_bytes(view[offset:offset + PREFIX], "big")
        if end - offset - PREFIX < n:
            break
        records.append(bytes(view[offset + PREFIX:offset + PREFIX + n]))
        offset += PREFIX + n
    tail = Tail(len(records), offset, end - offset) if offset < end else None
    return records, tail


def checkpoint_name(size: int) -> str:
    """The file name of the checkpoint of tree size ``size``."""
    return f"{size:0{SIZE_DIGITS}d}.note"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(size named, path)`` of every checkpoint file of the log in ``directory``, by size; temporaries skipped."""
    folder = Path(directory) / CHECKPOINTS
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LogStorageError(f"cannot list {folder}: {exc}", path=str(folder)) from exc
    found = [(int(m.group(1)), folder / name) for name in names if (m := _NAME.fullmatch(name))]
    return sorted(found)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        sync_directory(path.parent)
    except OSError as exc:
        raise LogStorageError(f"cannot write {path}: {exc}", path=str(path)) from exc


def sync_directory(folder: Path) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
