"""Hash-chained audit records, and the pure check that finds the first one tampered with.

A record is the canonical encoding (:func:`protocols.canonical_bytes`:
msgpack, every map's keys sorted) of one map::

    {"body": <any msgpack value>, "index": <int>, "kind": <str>, "prev_hash": <32 bytes>, "time": <float>}

``index`` counts from 0; ``time`` is a reading of the writer's clock (passed
in, never read here); ``kind`` names what happened (``"action.intent"``,
``"operator.kill"``...); ``prev_hash`` is the hash of the record before it,
:data:`GENESIS` (32 zero bytes) for record 0.

A record's hash is its RFC 6962 leaf hash, ``SHA-256(0x00 || record bytes)``:
one hash per record serves both the chain and the Merkle tree above it, so
the chain's head and the tree's last leaf are the same value.

Invariants:

- The bytes are what is hashed and stored; a record is never re-encoded to
  be checked, so a change of a single byte changes its hash.
- :func:`verify_chain` reads each record once, in order, keeps 32 bytes per
  record and an O(log n) :class:`~audit.Frontier`, and stops at the first
  fault.  It reports the first index it can prove bad, and why
  (:class:`Fault`); the rules are in its docstring, with what a chain alone
  cannot see (a change to the last record, or the log cut short after it):
  the signed tree head (:mod:`audit._note`) covers those.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from protocols import canonical_bytes

from ._merkle import EMPTY_ROOT, HASH_SIZE, Frontier
from .exceptions import TamperDetected

__all__ = ["GENESIS", "Chain", "ChainReport", "Fault", "Record", "Tamper", "decode_record", "verify_chain"]

#: ``prev_hash`` of record 0.
GENESIS = bytes(HASH_SIZE)

_FIELDS = frozenset({"body", "index", "kind", "prev_hash", "time"})
_sha256 = hashlib.sha256


def _hash(raw: bytes) -> bytes:
    return _sha256(b"\x00" + raw).digest()


def _encode(index: int, time: float, kind: str, body: Any, prev_hash: bytes) -> bytes:
    return canonical_bytes({"body": body, "index": index, "kind": kind, "prev_hash": prev_hash, "time": time})


@dataclass(frozen=True, slots=True)
class Record:
    """One audit record, decoded."""

    index: int
    time: float
    kind: str
    body: Any
    prev_hash: bytes

    def encode(self) -> bytes:
        """The record's canonical bytes: what is stored, and what its hash is of."""
        return _encode(self.index, self.time, self.kind, self.body, self.prev_hash)


def decode_record(raw: bytes) -> Record:
    """The record these bytes hold; ``ValueError`` when they hold none (a malformed record)."""
    try:
        value = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ValueError(f"not msgpack: {exc}") from exc
    if not isinstance(value, dict) or value.keys() != _FIELDS:
        raise ValueError("not a map of exactly body, index, kind, prev_hash, time")
    index, when, kind, prev = value["index"], value["time"], value["kind"], value["prev_hash"]
    if type(index) is not int or index < 0:
        raise ValueError(f"index {index!r} is not an int >= 0")
    if type(when) not in (int, float) or not math.isfinite(when):
        raise ValueError(f"time {when!r} is not a finite number")
    if type(kind) is not str or not kind:
        raise ValueError(f"kind {kind!r} is not a non-empty string")
    if type(prev) is not bytes or len(prev) != HASH_SIZE:
        raise ValueError(f"prev_hash is not {HASH_SIZE} bytes")
    return Record(index, when, kind, value["body"], prev)


class Chain:
    """The writer's side: the next record's index and link, and the tree head so far.

    ``append`` is pure given its arguments: the caller passes ``now`` and
    stores the returned bytes.  Resume after a restart with the last record's
    ``size``, ``head`` and the frontier's ``nodes`` (all three are in
    :meth:`state`).
    """

    __slots__ = ("_frontier", "_head")

    def __init__(self, size: int = 0, head: bytes = GENESIS, nodes: Iterable[bytes] = ()) -> None:
        if len(head) != HASH_SIZE or (size == 0) != (head == GENESIS):
            raise ValueError("head is GENESIS exactly when the chain is empty")
        self._frontier = Frontier(size, nodes)
        self._head = head

    @property
    def size(self) -> int:
        return self._frontier.size

    @property
    def head(self) -> bytes:
        """The last record's hash (its leaf hash); GENESIS while empty."""
        return self._head

    def root(self) -> bytes:
        """The RFC 6962 tree head over every record so far."""
        return self._frontier.root()

    def state(self) -> tuple[int, bytes, tuple[bytes, ...]]:
        """``(size, head, nodes)``: what :class:`Chain` needs to go on from here."""
        return self._frontier.size, self._head, self._frontier.nodes

    def append(self, kind: str, body: Any, now: float) -> bytes:
        """Encode the next record, link it, add it to the tree; its bytes, to be stored as they are."""
        if type(kind) is not str or not kind:
            raise ValueError(f"kind {kind!r} is not a non-empty string")
        if not math.isfinite(now):
            raise ValueError(f"time {now!r} is not finite")
        raw = _encode(self._frontier.size, now, kind, body, self._head)
        h = _hash(raw)
        self._frontier.append(h)
        self._head = h
        return raw


class Fault(str, enum.Enum):
    """Why a record is bad, as :func:`verify_chain` classifies it."""

    #: The bytes are not a record (not msgpack, or not the five fields with their types).
    MALFORMED = "malformed"
    #: The record is in its place but is not what the next record's ``prev_hash`` commits to, or it
    #: claims another index than its place while linking to the record before it.
    MODIFIED = "modified"
    #: Records are missing here: the record in this place claims a later index, and no record
    #: claiming a missing index follows.
    DELETED = "deleted"
    #: A record that does not belong here: a copy of an earlier one, or one no genuine record
    #: links to.
    INSERTED = "inserted"
    #: Genuine records out of order: this place holds a later record, and the one that belongs
    #: here follows.
    REORDERED = "reordered"


@dataclass(frozen=True, slots=True)
class Tamper:
    """The first bad record: its index (its place in the log), why, and what was seen."""

    index: int
    fault: Fault
    detail: str

    def error(self) -> TamperDetected:
        return TamperDetected(f"record {self.index} {self.fault.value}: {self.detail}",
                              index=self.index, reason=self.fault.value)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What :func:`verify_chain` found.

    ``read`` records were read; the first ``good`` of them are intact
    (``good == read`` when ``tamper`` is None).  ``head`` and ``root`` are the
    last good record's hash and the tree head over the good records; ``roots``
    holds the tree head at each asked size up to ``good``.
    """

    read: int
    good: int
    head: bytes
    root: bytes
    roots: dict[int, bytes] = field(default_factory=dict)
    tamper: Tamper | None = None

    @property
    def ok(self) -> bool:
        return self.tamper is None

    def check(self) -> ChainReport:
        """This report, or :class:`~audit.TamperDetected` for its first bad record."""
        if self.tamper is not None:
            raise self.tamper.error()
        return self


@dataclass(frozen=True, slots=True)
class _Seen:
    """A record read ahead of a fault: its hash, and what it says (None when malformed)."""

    hash: bytes
    record: Record | None


def _seen(raw: bytes) -> _Seen:
    try:
        return _Seen(_hash(raw), decode_record(raw))
    except ValueError:
        return _Seen(_hash(raw), None)


def verify_chain(records: Iterable[bytes], *, roots_at: Collection[int] = (), window: int = 1024) -> ChainReport:
    """Check every record's place and link, in order; report the first bad one and why.

    At place ``p`` the record claims index ``c`` and links to ``prev``; the
    record before it hashed to ``expected`` (GENESIS at 0).  The first rule
    that applies decides; where a rule looks ahead it reads at most ``window``
    more records (a record moved further than that is reported as deleted):

    1. Not a record: MALFORMED at ``p``.
    2. ``c == p`` and ``prev == expected``: good.
    3. ``c == p`` and ``prev != expected``: the link is broken.  If the next
       record is the genuine record ``p`` (claims ``p``, links to ``expected``):
       INSERTED at ``p``.  If the next record links to this one (or there is
       none), this one is genuine and the record before it changed: MODIFIED
       at ``p - 1``; otherwise this one changed: MODIFIED at ``p`` (also at
       ``p == 0``).
    4. ``c != p`` and ``prev == expected``: it links where it stands, but its
       index changed: MODIFIED at ``p``.
    5. ``c > p``: if no record ahead claims an index in ``[p, c)``, they are
       gone: DELETED at ``p``.  If one does: a copy of a record ahead is
       INSERTED at ``p``; a genuine record (a record ahead links to it, or it
       links to one ahead) is REORDERED at ``p``; anything else is INSERTED at
       ``p``.
    6. ``c < p``: a copy of record ``c``: INSERTED at ``p``.  The genuine
       record ``c`` (it links to record ``c - 1``): the records from ``c`` on
       were a forged branch, INSERTED at ``c``.  Anything else: INSERTED at ``p``.

    What no chain can see: a change to the last record (nothing links to it)
    and records cut off the end; the tree head in ``roots`` / ``root``,
    compared with a signed checkpoint, sees both.
    """
    wanted = set(roots_at)
    roots: dict[int, bytes] = {0: EMPTY_ROOT} if 0 in wanted else {}
    frontier = Frontier()
    hashes = bytearray()  # every good record's hash: 32 bytes each, for rule 6
    expected = GENESIS
    it = iter(records)
    p = 0
    for raw in it:
        h = _hash(raw)
        try:
            rec = decode_record(raw)
        except ValueError as exc:
            return _report(p, frontier, expected, roots, Tamper(p, Fault.MALFORMED, str(exc)), p + 1)
        if rec.index == p and rec.prev_hash == expected:
            frontier.append(h)
            hashes += h
            expected = h
            p += 1
            if p in wanted:
                roots[p] = frontier.root()
            continue
        ahead = [_seen(r) for r in itertools.islice(it, window)]
        tamper = _classify(p, rec, h, expected, bytes(hashes), ahead)
        good = tamper.index
        if good < p:  # rules 3 and 6 may blame records already counted as good: report the prefix before them
            frontier = _frontier_of(hashes, good)
            expected = bytes(hashes[32 * (good - 1):32 * good]) if good else GENESIS
        return _report(good, frontier, expected, roots, tamper, p + 1 + len(ahead))
    return _report(p, frontier, expected, roots, None, p)


def _frontier_of(hashes: bytearray, size: int) -> Frontier:
    frontier = Frontier()
    for i in range(size):
        frontier.append(bytes(hashes[32 * i:32 * i + 32]))
    return frontier


def _report(good: int, frontier: Frontier, head: bytes, roots: dict[int, bytes], tamper: Tamper | None,
            read: int) -> ChainReport:
    return ChainReport(read=read, good=good, head=bytes(head), root=frontier.root(),
                       roots={s: r for s, r in roots.items() if s <= good}, tamper=tamper)


def _links(later: Record | None, earlier_hash: bytes, earlier_index: int) -> bool:
    return later is not None and later.index == earlier_index + 1 and later.prev_hash == earlier_hash


def _classify(p: int, rec: Record, h: bytes, expected: bytes, hashes: bytes, ahead: list[_Seen]) -> Tamper:
    c, prev = rec.index, rec.prev_hash
    nxt = ahead[0].record if ahead else None
    if c == p:  # rule 3
        if nxt is not None and nxt.index == p and nxt.prev_hash == expected:
            return Tamper(p, Fault.INSERTED, f"the record in place {p} is followed by the genuine record {p}")
        if p > 0 and (not ahead or _links(nxt, h, p)):
            return Tamper(p - 1, Fault.MODIFIED, f"record {p} links to another record {p - 1}")
        return Tamper(p, Fault.MODIFIED, f"record {p} does not link to record {p - 1}" if p else
                      "record 0 does not start the chain")
    if prev == expected:  # rule 4
        return Tamper(p, Fault.MODIFIED, f"the record in place {p} links there but claims index {c}")
    if c > p:  # rule 5
        if not any(s.record is not None and p <= s.record.index < c for s in ahead):
            return Tamper(p, Fault.DELETED, f"{c - p} record(s) missing: the record in place {p} claims index {c}")
        if any(s.hash == h for s in ahead):
            return Tamper(p, Fault.INSERTED, f"the record in place {p} is a copy of record {c}, which follows")
        if any(s.record is not None and (_links(s.record, h, c) or (s.hash == prev and s.record.index == c - 1))
               for s in ahead):
            return Tamper(p, Fault.REORDERED, f"record {c} stands in place {p}, before the records it follows")
        return Tamper(p, Fault.INSERTED, f"the record in place {p} claims index {c} and belongs to no chain")
    # rule 6: c < p
    if h == hashes[32 * c:32 * c + 32]:
        return Tamper(p, Fault.INSERTED, f"the record in place {p} is a copy of record {c}")
    if prev == (hashes[32 * (c - 1):32 * c] if c else GENESIS):
        return Tamper(c, Fault.INSERTED, f"records {c}..{p - 1} are a branch: the record in place {p} is the "
                                         f"genuine record {c}")
    return Tamper(p, Fault.INSERTED, f"the record in place {p} claims index {c} and links to no record before it")


