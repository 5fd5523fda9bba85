"""Offline checks of a log directory: :func:`verify_log`, and the proofs a verifier asks for.

:func:`verify_log` trusts nothing in the directory but what a trusted key
signed.  It reads every record and every checkpoint file and reports the
FIRST fault, in this order (each later check assumes the earlier passed):

1. The records, by :func:`~audit.verify_chain`: MALFORMED, MODIFIED,
   DELETED, INSERTED, REORDERED at the first bad record's index; then a torn
   tail (``torn``, at the torn record's index).
2. The checkpoints, by size as their file names say; at the named size:
   ``unreadable`` (not a checkpoint note, or the file cannot be read),
   ``bad-signature`` (no valid signature by a trusted key), ``other-origin``
   (not the first checkpoint's log), ``shrunk`` (smaller than the
   checkpoint before it), ``misnamed`` (its size is not its name's),
   ``truncated`` (it covers records the file no longer has: reported at the
   first missing record's index), ``root-mismatch`` (the records do not
   hash to its root), ``inconsistent`` (no consistency proof from the
   previous checkpoint, built from the records, verifies).

Proofs come from the records as they are (:class:`LogProver`), as hex, in
the shape :func:`~audit.verify_inclusion` / :func:`~audit.verify_consistency`
take; a verifier checks them against a root it trusts (a signed
checkpoint's), never against the root printed beside them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._chain import decode_record, verify_chain
from ._files import list_checkpoints, read_records
from ._keys import VerifierKey
from ._merkle import TreeStore, leaf_hash
from ._note import Checkpoint, check_consistent, open_checkpoint
from .exceptions import AuditError, BadSignature, MalformedNote

__all__ = ["LogProver", "LogReport", "prove_consistency", "prove_inclusion", "read_log", "verify_log"]


@dataclass(frozen=True, slots=True)
class LogReport:
    """What :func:`verify_log` found: ``ok``, or the first fault's ``index``, ``reason`` and ``detail``.

    ``records`` complete records were read; ``checkpoints`` checkpoint files
    were found, ``verified`` of them checked all the way through.
    """

    records: int
    checkpoints: int
    verified: int
    size: int | None = None
    root: str | None = None
    index: int | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "records": self.records, "checkpoints": self.checkpoints,
                               "verified_checkpoints": self.verified}
        if self.ok:
            out.update(size=self.size, root=self.root)
        else:
            out.update(index=self.index, reason=self.reason, detail=self.detail)
        return out


def verify_log(directory: str | os.PathLike[str], trusted_keys: VerifierKey | Iterable[VerifierKey], *,
               origin: str | None = None) -> LogReport:
    """Check the log in ``directory`` against ``trusted_keys``; the first fault, or ok (rules above).

    Raises only :class:`~audit.LogStorageError` (the directory cannot be
    read); every fault of the log itself is in the report.
    """
    keys = [trusted_keys] if isinstance(trusted_keys, VerifierKey) else list(trusted_keys)
    records, tail = read_records(directory)
    files = list_checkpoints(directory)
    n_files = len(files)

    def fault(index: int, reason: str, detail: str, verified: int = 0) -> LogReport:
        return LogReport(len(records), n_files, verified, index=index, reason=reason, detail=detail)

    chain = verify_chain(records, roots_at={size for size, _ in files})
    if chain.tamper is not None:
        return fault(chain.tamper.index, chain.tamper.fault.value, chain.tamper.detail)
    if tail is not None:
        return fault(tail.index, "torn", f"the file ends in {tail.size} bytes of a record at offset {tail.offset}")
    prover: LogProver | None = None
    previous: Checkpoint | None = None
    for verified, (named, path) in enumerate(files):
        try:
            note = path.read_bytes()
        except OSError as exc:
            return fault(named, "unreadable", f"{path}: {exc}", verified)
        try:
            cp = open_checkpoint(note, keys)
        except MalformedNote as exc:
            return fault(named, "unreadable", str(exc), verified)
        except BadSignature as exc:
            return fault(named, "bad-signature", str(exc), verified)
        if origin is None:
            origin = cp.origin
        if cp.origin != origin:
            return fault(named, "other-origin", f"a checkpoint of {cp.origin!r}, not of {origin!r}", verified)
        if previous is not None and cp.size < previous.size:
            return fault(named, "shrunk", f"the tree shrank from {previous.size} to {cp.size} records", verified)
        if cp.size != named:
            return fault(named, "misnamed", f"the file of size {named} holds a checkpoint of size {cp.size}",
                         verified)
        if cp.size > len(records):
            return fault(len(records), "truncated", f"the log has {len(records)} records; checkpoint {cp.size} "
                                                    f"signed {cp.size - len(records)} more", verified)
        if chain.roots[cp.size] != cp.root:
            return fault(named, "root-mismatch", f"the records do not hash to checkpoint {cp.size}'s root", verified)
        if previous is not None and previous.size > 0:
            prover = prover or LogProver(records)
            try:
                check_consistent(previous, cp, prover.tree.consistency_proof(previous.size, cp.size))
            except AuditError as exc:
                return fault(named, "inconsistent", str(exc), verified)
        previous = cp
    return LogReport(len(records), n_files, n_files, size=len(records), root=chain.root.hex())


class LogProver:
    """Inclusion and consistency proofs over a log's records, read once (a :class:`~audit.TreeStore`)."""

    def __init__(self, records: Iterable[bytes]) -> None:
        self.tree = TreeStore(leaf_hash(raw) for raw in records)

    @classmethod
    def of(cls, directory: str | os.PathLike[str]) -> LogProver:
        """The prover of the log in ``directory`` (its complete records)."""
        return cls(read_records(directory)[0])

    def _size(self, size: int | None) -> int:
        size = self.tree.size if size is None else size
        if not 0 <= size <= self.tree.size:
            raise AuditError(f"no tree of size {size}: the log has {self.tree.size} records", size=size)
        return size

    def inclusion(self, index: int, size: int | None = None) -> dict[str, Any]:
        """Record ``index`` is in the tree of ``size`` (default: every record): leaf hash, root, path, as hex."""
        size = self._size(size)
        if not 0 <= index < size:
            raise AuditError(f"no record {index} in a tree of {size} records", index=index, size=size)
        return {"index": index, "size": size, "leaf_hash": self.tree.leaf(index).hex(),
                "root": self.tree.root(size).hex(), "proof": [h.hex() for h in self.tree.inclusion_proof(index, size)]}

    def consistency(self, size1: int, size2: int | None = None) -> dict[str, Any]:
        """The tree of ``size2`` (default: every record) extends the tree of ``size1``: both roots and the proof."""
        size2 = self._size(size2)
        if not 0 <= size1 <= size2:
            raise AuditError(f"no proof from {size1} to {size2} records", size1=size1, size2=size2)
        proof = self.tree.consistency_proof(size1, size2) if size1 else []
        return {"size1": size1, "size2": size2, "root1": self.tree.root(size1).hex(),
                "root2": self.tree.root(size2).hex(), "proof": [h.hex() for h in proof]}


def prove_inclusion(directory: str | os.PathLike[str], index: int, size: int | None = None) -> dict[str, Any]:
    """An inclusion proof for record ``index`` of the log in ``directory`` (see :meth:`LogProver.inclusion`)."""
    return LogProver.of(directory).inclusion(index, size)


def prove_consistency(directory: str | os.PathLike[str], size1: int, size2: int | None = None) -> dict[str, Any]:
    """A consistency proof between two sizes of the log in ``directory`` (see :meth:`LogProver.consistency`)."""
    return LogProver.of(directory).consistency(size1, size2)


def read_log(directory: str | os.PathLike[str], start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """Records ``start`` .. ``start + limit`` of the log, decoded; a malformed one as its place and why."""
    records, _ = read_records(directory)
    stop = len(records) if limit is None else min(len(records), start + limit)
    out: list[dict[str, Any]] = []
    for place in range(max(start, 0), stop):
        try:
            r = decode_record(records[place])
        except ValueError as exc:
            out.append({"place": place, "malformed": str(exc)})
            continue
        out.append({"index": r.index, "time": r.time, "kind": r.kind, "body": r.body, "prev_hash": r.prev_hash})
    return out
