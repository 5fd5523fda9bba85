"""Where checkpoints and shipped journal segments live: an interface and a directory store.

The store is shared by every node that may host an agent (a local disk for
one machine, a shared filesystem mounted on every node for a cluster).  An
object store fits the same interface later: every method moves whole files.

Layout of :class:`DirectoryStore`::

    <root>/<agent_id>/ckpt-<seq>.mdb          compacted LMDB copy (the body)
    <root>/<agent_id>/ckpt-<seq>.manifest     "sha256:<hex>\\n" + JSON manifest
    <root>/<agent_id>/journal/seg-<first>-<last>-<last_ms>-e<epoch>.jnl
    <root>/<agent_id>/transitions/tseg-<first>-<last>-<last_ms>-e<epoch>.trn
    <root>/<agent_id>/staging/                 temporary files, same filesystem
    <root>/<agent_id>/epochs/<epoch>           one file per claimed fencing epoch (who, when)
    <root>/<agent_id>/epochs/<epoch>.base      the seq that epoch's host restored to
    <root>/<agent_id>/audit/                   the agent's audit log (``audit``'s format, see ``_audit``)

Invariant: a checkpoint exists iff its manifest exists; the manifest is
written (temp file, fsync, rename, fsync of the directory) only after its body
is in place, so a crash at any point leaves either a whole checkpoint or an
ignorable orphan body.

Invariant: epoch files are created with ``O_CREAT | O_EXCL`` and never
deleted, so each epoch is claimed by exactly one host and "epoch ``e`` is
superseded" is the existence of file ``e + 1`` (one ``stat``).

Invariant: transition segments are immutable and append-only: each is
written once (temp file, fsync, hard link to its final name, which fails
rather than replace an existing file, fsync of the directory) and never
rewritten; only whole segments past ``transition_retention`` are deleted,
oldest first.  Its name is a function of its content, so a retried write
of the same segment finds it in place and leaves it alone.

Bounds of what the store holds per agent: ``keep_checkpoints`` checkpoints;
journal segments down to the trim horizon (see ``_checkpoint``); transition
segments of the last ``transition_retention`` seconds; ``staging`` only while
a checkpoint runs (``sweep`` clears leftovers).  Epoch files: two small files
(about 100 bytes) per host start, never trimmed: deleting ``e + 1`` would let
a surviving incarnation of epoch ``e`` pass as current.  They grow with
restarts and failovers, not with messages.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .exceptions import CheckpointCorrupt, CheckpointError, DataDirectoryError

__all__ = [
    "CheckpointStore",
    "Cutoff",
    "DirectoryStore",
    "Manifest",
    "SegmentInfo",
    "atomic_write",
    "epoch_cutoff",
    "write_once",
    "sha256_file",
    "store_error",
]

_SEG = re.compile(r"^seg-(\d{20})-(\d{20})-(\d+)(?:-e(\d+))?\.jnl$")
_TSEG = re.compile(r"^tseg-(\d{20})-(\d{20})-(\d+)-e(\d+)\.trn$")
_CKPT = re.compile(r"^ckpt-(\d{20})\.manifest$")


class Manifest(BaseModel):
    """What a checkpoint is, readable without touching its body."""

    model_config = ConfigDict(frozen=True)

    format: int = 1
    agent_id: str
    agent_class: str
    config_version: str
    seq: int
    time: float
    size: int
    checksum: str
    summary: Any = None
    summary_type: str | None = None
    #: The fencing epoch of the incarnation that took it (0: before epochs).
    epoch: int = 0
    #: The hash of the agent version's manifest it was taken under (``_version``; None: before manifests).
    version: str | None = None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One shipped journal segment: records ``first..last`` (inclusive)."""

    first: int
    last: int
    last_time: float
    #: The fencing epoch of the incarnation that shipped it (0: before epochs).
    epoch: int = 0


#: ``cutoff(epoch)``: the highest seq written by ``epoch`` that later history includes.
Cutoff = Callable[[int], float]


def epoch_cutoff(bases: dict[int, int]) -> Cutoff:
    """From every epoch's restore point, ``cutoff(e)``: the lowest base of any epoch newer than ``e``.

    What epoch ``e`` wrote past ``cutoff(e)`` no newer incarnation restored:
    a fork, never to be restored or counted as shipped (see ``_restore``).
    """
    epochs = sorted(bases)
    lowest_from: list[float] = [math.inf] * (len(epochs) + 1)  # min of the bases of epochs[i:]
    for i in range(len(epochs) - 1, -1, -1):
        lowest_from[i] = min(lowest_from[i + 1], bases[epochs[i]])

    def cutoff(epoch: int) -> float:
        return lowest_from[bisect.bisect_right(epochs, epoch)]

    return cutoff


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])  # hashlib drops the GIL for large updates
    return "sha256:" + h.hexdigest()


#: ``strerror`` text -> errno: LMDB reports an OS error as ``"call: strerror"``, without the number.
_STRERRORS = {os.strerror(n): n for n in errno.errorcode}


def store_error(what: str, exc: BaseException, path: str | os.PathLike[str] | None = None) -> CheckpointError:
    """Translate a filesystem (or LMDB) error into a CheckpointError carrying ``errno``, ``errno_name``, ``path``.

    Raise it ``from exc``.  ``path`` is used when the error names no file.
    """
    err = exc.errno if isinstance(exc, OSError) else None
    if err is None:
        err = _STRERRORS.get(str(exc).rpartition(": ")[2].strip())
    where = getattr(exc, "filename", None) or path
    details: dict[str, Any] = {"errno": err, "errno_name": errno.errorcode.get(err) if err is not None else None,
                               "path": os.fspath(where) if where is not None else None}
    return CheckpointError(f"{what}: {exc}", **{k: v for k, v in details.items() if v is not None})


def _list_segments(base: Path, pattern: re.Pattern[str]) -> list[SegmentInfo]:
    """The segments named in ``base`` (journal or transitions), in order of ``first``."""
    if not base.is_dir():
        return []
    out = [
        SegmentInfo(int(m.group(1)), int(m.group(2)), int(m.group(3)) / 1000.0, int(m.group(4) or 0))
        for p in base.iterdir()
        if (m := pattern.match(p.name))
    ]
    return sorted(out, key=lambda s: (s.first, s.last))


def _read_sealed(path: Path, what: str) -> bytes:
    """A sealed file's payload; CheckpointCorrupt if it is unreadable or fails its checksum."""
    try:
        return unseal(path.read_bytes(), str(path))
    except OSError as exc:
        raise CheckpointCorrupt(f"{what} {path} is unreadable: {exc}") from exc


def _unlink(path: Path, what: str) -> None:
    """Delete ``path`` if it exists; a filesystem error is a CheckpointError with errno and path."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise store_error(f"cannot delete {what}", exc, path) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_once(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; return whether it was created.

    Temp file, fsync, hard link to the final name (``link`` never replaces an
    existing file, unlike ``rename``), fsync of the directory: readers see no
    file or the whole file, and a written file is never rewritten.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def seal(payload: bytes) -> bytes:
    """Prefix ``payload`` with its checksum line."""
    return b"sha256:" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def unseal(data: bytes, what: str) -> bytes:
    """Check and strip the checksum line; raise CheckpointCorrupt before any parsing."""
    head, sep, payload = data.partition(b"\n")
    if not sep or not head.startswith(b"sha256:"):
        raise CheckpointCorrupt(f"{what}: missing checksum header (torn or foreign file)", what=what)
    if hashlib.sha256(payload).hexdigest().encode() != head[7:]:
        raise CheckpointCorrupt(f"{what}: checksum mismatch", what=what)
    return payload


class CheckpointStore(abc.ABC):
    """Durable home of checkpoints and journal segments, shared across nodes."""

    @abc.abstractmethod
    def staging(self, agent_id: str) -> Path:
        """A fresh local directory to build a checkpoint body in."""

    def audit_dir(self, agent_id: str) -> Path | None:
        """The directory of the agent's audit log; None: this store keeps none (no audit log)."""
        return None

    @abc.abstractmethod
    def put_checkpoint(self, manifest: Manifest, body: Path) -> None:
        """Publish ``body`` (moved or copied) and then its manifest, atomically."""

    @abc.abstractmethod
    def list_checkpoints(self, agent_id: str) -> list[int]:
        """Sequence numbers of the agent's checkpoints, newest first."""

    @abc.abstractmethod
    def read_manifest(self, agent_id: str, seq: int) -> Manifest:
        """The verified manifest; CheckpointCorrupt if it fails its checksum."""

    @abc.abstractmethod
    def fetch_checkpoint(self, manifest: Manifest, dest: Path) -> None:
        """Copy the body to ``dest`` and verify it; CheckpointCorrupt on mismatch."""

    @abc.abstractmethod
    def delete_checkpoint(self, agent_id: str, seq: int) -> None: ...

    @abc.abstractmethod
    def put_segment(self, agent_id: str, info: SegmentInfo, payload: bytes) -> None:
        """Durably store one journal segment (sealed with a checksum)."""

    @abc.abstractmethod
    def list_segments(self, agent_id: str) -> list[SegmentInfo]:
        """The agent's segments, in order of ``first``."""

    @abc.abstractmethod
    def read_segment(self, agent_id: str, info: SegmentInfo) -> bytes:
        """The segment's payload; CheckpointCorrupt if it fails its checksum."""

    @abc.abstractmethod
    def delete_segment(self, agent_id: str, info: SegmentInfo) -> None: ...

    def sweep(self, agent_id: str) -> int:
        """Remove leftovers of interrupted checkpoints (call when no checkpoint runs); returns how many."""
        return 0

    @abc.abstractmethod
    def put_transitions(self, agent_id: str, info: SegmentInfo, payload: bytes) -> None:
        """Durably store one transition segment, once: never replaces an existing one."""

    @abc.abstractmethod
    def list_transitions(self, agent_id: str) -> list[SegmentInfo]:
        """The agent's transition segments, in order of ``first``."""

    @abc.abstractmethod
    def read_transitions(self, agent_id: str, info: SegmentInfo) -> bytes:
        """The transition segment's payload; CheckpointCorrupt if it fails its checksum."""

    @abc.abstractmethod
    def delete_transitions(self, agent_id: str, info: SegmentInfo) -> None:
        """Remove a whole transition segment (retention only: segments are never rewritten)."""

    @abc.abstractmethod
    def claim_epoch(self, agent_id: str, claimant: dict[str, Any]) -> int:
        """Atomically claim the next fencing epoch of the agent (1, 2, ...); never the same twice."""

    @abc.abstractmethod
    def superseded(self, agent_id: str, epoch: int) -> bool:
        """Whether a later epoch than ``epoch`` has been claimed for the agent."""

    @abc.abstractmethod
    def record_base(self, agent_id: str, epoch: int, seq: int) -> None:
        """Record that epoch ``epoch``'s host restored the agent to ``seq`` (before it writes anything)."""

    @abc.abstractmethod
    def bases(self, agent_id: str) -> dict[int, int]:
        """Every recorded ``epoch -> seq it restored to``."""


class DirectoryStore(CheckpointStore):
    """A checkpoint store in a directory (local disk or a shared mount)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise DataDirectoryError(f"checkpoint directory {self.root} does not exist", path=str(self.root))

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _agent(self, agent_id: str) -> Path:
        path = self.root / agent_id
        try:
            (path / "journal").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(f"cannot create {path}", exc, path) from exc
        return path

    def audit_dir(self, agent_id: str) -> Path:
        return self.root / agent_id / "audit"

    def staging(self, agent_id: str) -> Path:
        path = self._agent(agent_id) / "staging" / uuid.uuid4().hex
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise store_error(f"cannot create the staging directory {path}", exc, path) from exc
        return path

    def put_checkpoint(self, manifest: Manifest, body: Path) -> None:
        base = self._agent(manifest.agent_id)
        name = f"ckpt-{manifest.seq:020d}"
        published = base / f"{name}.mdb"
        try:
            with open(body, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(body, published)
            _fsync_dir(base)
            atomic_write(base / f"{name}.manifest", seal(manifest.model_dump_json().encode()))
        except OSError as exc:
            # A body without its manifest is no checkpoint: do not leave it filling a full store
            # (unless a manifest of that seq exists already: then the body is that checkpoint's).
            if not (base / f"{name}.manifest").exists():
                with contextlib.suppress(OSError):
                    published.unlink(missing_ok=True)
            raise store_error(f"cannot publish checkpoint {name} of {manifest.agent_id}", exc, base) from exc
        finally:
            shutil.rmtree(body.parent, ignore_errors=True)

    def list_checkpoints(self, agent_id: str) -> list[int]:
        base = self.root / agent_id
        if not base.is_dir():
            return []
        seqs = [int(m.group(1)) for p in base.iterdir() if (m := _CKPT.match(p.name))]
        return sorted(seqs, reverse=True)

    def read_manifest(self, agent_id: str, seq: int) -> Manifest:
        path = self.root / agent_id / f"ckpt-{seq:020d}.manifest"
        try:
            payload = unseal(path.read_bytes(), str(path))
            return Manifest.model_validate_json(payload)
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        except ValidationError as exc:
            raise CheckpointCorrupt(f"{path}: manifest does not parse: {exc}") from exc

    def fetch_checkpoint(self, manifest: Manifest, dest: Path) -> None:
        src = self.root / manifest.agent_id / f"ckpt-{manifest.seq:020d}.mdb"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise CheckpointCorrupt(f"checkpoint body {src} is unreadable: {exc}", path=str(src)) from exc
        # Invariant: the body is checked against the manifest before LMDB opens it.
        actual = sha256_file(dest)
        if actual != manifest.checksum or dest.stat().st_size != manifest.size:
            dest.unlink(missing_ok=True)
            raise CheckpointCorrupt(
                f"checkpoint {src} failed its checksum (manifest {manifest.checksum[:19]}..., "
                f"file {actual[:19]}...)",
                path=str(src),
                seq=manifest.seq,
            )

    def delete_checkpoint(self, agent_id: str, seq: int) -> None:
        base = self.root / agent_id
        # Manifest first: once it is gone the checkpoint no longer exists.
        for suffix in (".manifest", ".mdb"):
            _unlink(base / f"ckpt-{seq:020d}{suffix}", f"checkpoint {seq} of {agent_id}")

    def _segment_path(self, agent_id: str, info: SegmentInfo) -> Path:
        name = f"seg-{info.first:020d}-{info.last:020d}-{int(info.last_time * 1000)}"
        return self.root / agent_id / "journal" / (f"{name}-e{info.epoch}.jnl" if info.epoch else f"{name}.jnl")

    def put_segment(self, agent_id: str, info: SegmentInfo, payload: bytes) -> None:
        self._agent(agent_id)
        try:
            atomic_write(self._segment_path(agent_id, info), seal(payload))
        except OSError as exc:
            raise store_error(f"cannot ship journal segment {info.first}-{info.last} of {agent_id}", exc,
                              self.root / agent_id / "journal") from exc

    def list_segments(self, agent_id: str) -> list[SegmentInfo]:
        return _list_segments(self.root / agent_id / "journal", _SEG)

    def read_segment(self, agent_id: str, info: SegmentInfo) -> bytes:
        return _read_sealed(self._segment_path(agent_id, info), "journal segment")

    def delete_segment(self, agent_id: str, info: SegmentInfo) -> None:
        _unlink(self._segment_path(agent_id, info), f"journal segment {info.first}-{info.last} of {agent_id}")

    def _transitions_path(self, agent_id: str, info: SegmentInfo) -> Path:
        return (self.root / agent_id / "transitions"
                / f"tseg-{info.first:020d}-{info.last:020d}-{int(info.last_time * 1000)}-e{info.epoch}.trn")

    def put_transitions(self, agent_id: str, info: SegmentInfo, payload: bytes) -> None:
        path = self._transitions_path(agent_id, info)
        data = seal(payload)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not write_once(path, data):
                # Written before (a retry after a failure past the link): the same
                # name is the same content; anything else is a foreign file.
                if path.read_bytes() != data:
                    raise CheckpointCorrupt(f"transition segment {path} exists with other content", path=str(path))
        except OSError as exc:
            raise store_error(f"cannot ship transition segment {info.first}-{info.last} of {agent_id}",
                              exc, path) from exc

    def list_transitions(self, agent_id: str) -> list[SegmentInfo]:
        return _list_segments(self.root / agent_id / "transitions", _TSEG)

    def read_transitions(self, agent_id: str, info: SegmentInfo) -> bytes:
        return _read_sealed(self._transitions_path(agent_id, info), "transition segment")

    def delete_transitions(self, agent_id: str, info: SegmentInfo) -> None:
        _unlink(self._transitions_path(agent_id, info), f"transition segment {info.first}-{info.last} of {agent_id}")

    def claim_epoch(self, agent_id: str, claimant: dict[str, Any]) -> int:
        base = self._agent(agent_id) / "epochs"
        try:
            base.mkdir(exist_ok=True)
            epoch = max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0) + 1
            while True:
                try:  # O_EXCL: of two hosts claiming the same number, exactly one succeeds
                    fd = os.open(base / f"{epoch:020d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    epoch += 1
                    continue
                with os.fdopen(fd, "wb") as f:
                    f.write(json.dumps({**claimant, "epoch": epoch}).encode())
                    f.flush()
                    os.fsync(f.fileno())
                _fsync_dir(base)
                return epoch
        except OSError as exc:
            raise store_error(f"cannot claim a fencing epoch for {agent_id} in {base}", exc, base) from exc

    def superseded(self, agent_id: str, epoch: int) -> bool:
        return os.path.exists(f"{self.root}/{agent_id}/epochs/{epoch + 1:020d}")

    def record_base(self, agent_id: str, epoch: int, seq: int) -> None:
        path = self._agent(agent_id) / "epochs" / f"{epoch:020d}.base"
        try:
            atomic_write(path, str(seq).encode())
        except OSError as exc:
            raise store_error(f"cannot record the restore point of {agent_id} epoch {epoch}", exc, path) from exc

    def bases(self, agent_id: str) -> dict[int, int]:
        base = self.root / agent_id / "epochs"
        if not base.is_dir():
            return {}
        out = {}
        for p in base.glob("*.base"):
            try:
                out[int(p.stem)] = int(p.read_text())
            except (OSError, ValueError):
                continue  # torn or foreign: that epoch gives no cut-off
        return out

    def sweep(self, agent_id: str) -> int:
        base = self.root / agent_id
        if not base.is_dir():
            return 0
        manifests = {p.stem for p in base.glob("ckpt-*.manifest")}
        leftovers = [p for p in base.glob("ckpt-*.mdb") if p.stem not in manifests]
        staging = base / "staging"
        leftovers += list(staging.iterdir()) if staging.is_dir() else []
        leftovers += list((base / "transitions").glob(".tseg-*"))  # temp files of interrupted writes
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return len(leftovers)
