"""Signed checkpoints: a tree head as a signed note, and the checks a verifier makes on two of them.

The format is the transparency logs' (C2SP ``signed-note`` and
``tlog-checkpoint``), so their tools can read ours::

    garrison.example/audit/agent-7          origin: which log
    20852163                                tree size, decimal, no leading zeros
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=   RFC 6962 root, standard base64
                                            a blank line ends the text
    — garrison.example/audit <base64(key id || Ed25519 signature)>

A note is UTF-8 text without control characters other than newline.  Its
*text* is everything up to and including the newline before the last blank
line, and it is what is signed; every line after that blank line is a
signature line: an em dash (U+2014), a space, the key name, a space, and the
base64 of the 4-byte key id (:mod:`audit._keys`) followed by the signature.
A checkpoint's text is at least three non-empty lines (origin, size, root);
further non-empty lines are opaque extensions, kept and signed.

Verification follows the signed-note rules: a signature whose (name, key id)
pair is not a trusted key's is ignored; one that is must verify, or the whole
note is refused; a note with no verified trusted signature is refused.

Invariants:

- :func:`open_note` and :func:`open_checkpoint` return only text a trusted
  key signed; nothing of a note is interpreted before its signature verifies.
- A checkpoint of size 0 has the empty tree's root, and a root is 32 bytes;
  anything else is a :class:`~audit.MalformedNote`.
- :func:`check_consistent` accepts a newer checkpoint only if it is of the
  same log, not smaller, not a different tree of the same size, and (when
  larger) linked to the older one by a consistency proof that verifies.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._keys import SigningKey, VerifierKey, check_key_name, strict_b64decode
from ._merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from .exceptions import BadProof, BadSignature, InconsistentCheckpoints, KeyFileError, MalformedNote

__all__ = [
    "Checkpoint",
    "Note",
    "NoteSignature",
    "check_consistent",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "sign_checkpoint",
    "sign_note",
]

#: The signature line's lead: an em dash and a space.
DASH = "\u2014 "
#: Notes larger than this are refused unread (a checkpoint is a few hundred bytes).
MAX_NOTE_BYTES = 64 * 1024
#: At most this many signature lines (the signed-note spec asks verifiers to accept 16).
MAX_SIGNATURES = 64

_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: which log, how many records, their RFC 6962 root."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise MalformedNote(f"origin {self.origin!r} is not one non-empty line")
        if type(self.size) is not int or self.size < 0:
            raise MalformedNote(f"tree size {self.size!r} is not an int >= 0")
        if len(self.root) != HASH_SIZE:
            raise MalformedNote(f"a root hash is {HASH_SIZE} bytes, not {len(self.root)}")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise MalformedNote("a checkpoint of size 0 must have the empty tree's root")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL.search(line):
                raise MalformedNote(f"extension line {line!r} is not one non-empty line")

    def text(self) -> str:
        """The note text: origin, size and root lines, then the extensions, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint a note text holds (the text only: no signature is checked here)."""
        if not text.endswith("\n"):
            raise MalformedNote("a checkpoint's text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise MalformedNote("a checkpoint is at least three lines (origin, size, root), none of them empty")
        origin, size, root = lines[:3]
        if not _SIZE.fullmatch(size):
            raise MalformedNote(f"tree size {size!r} is not a decimal number without leading zeros")
        try:
            root_hash = strict_b64decode(root)
        except ValueError as exc:
            raise MalformedNote(f"root hash {root!r}: {exc}") from exc
        return cls(origin, int(size), root_hash, tuple(lines[3:]))


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: who claims to have signed (name, key id) and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode('ascii')}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed note: its text and its signature lines, none of them checked yet."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def sign_note(text: str, *keys: SigningKey) -> str:
    """``text`` (ending in a newline) signed by each of ``keys``: a note."""
    if not keys:
        raise ValueError("a note needs at least one signature")
    if not text.endswith("\n") or _CONTROL.search(text):
        raise MalformedNote("a note's text ends with a newline and has no control characters but newlines")
    message = text.encode("utf-8")
    return str(Note(text, tuple(NoteSignature(k.name, k.verifier.key_id, k.sign(message)) for k in keys)))


def _signature(line: str) -> NoteSignature:
    if not line.startswith(DASH):
        raise MalformedNote(f"signature line {line[:40]!r} does not start with an em dash and a space")
    name, space, blob = line[len(DASH):].partition(" ")
    if not space:
        raise MalformedNote(f"signature line {line[:40]!r} is not: em dash, name, signature")
    try:
        check_key_name(name)
        data = strict_b64decode(blob)
    except (KeyFileError, ValueError) as exc:
        raise MalformedNote(f"signature line of {name!r}: {exc}") from exc
    if len(data) < 5:
        raise MalformedNote(f"signature line of {name!r} is too short for a key id and a signature")
    return NoteSignature(name, data[:4], data[4:])


def parse_note(note: str | bytes) -> Note:
    """Split a note into its text and signature lines; :class:`~audit.MalformedNote` if it is not one."""
    try:
        raw = note if isinstance(note, bytes) else note[:MAX_NOTE_BYTES + 1].encode("utf-8")
        if len(raw) > MAX_NOTE_BYTES:
            raise MalformedNote(f"a note is at most {MAX_NOTE_BYTES} bytes")
        note = raw.decode("utf-8")
    except UnicodeError as exc:  # undecodable bytes, or a str with lone surrogates
        raise MalformedNote(f"a note is valid UTF-8: {exc}") from exc
    if _CONTROL.search(note):
        raise MalformedNote("a note has no control characters but newlines")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise MalformedNote("a note is text, a blank line, and signature lines, each ending in a newline")
    text, lines = note[:split + 1], note[split + 2:-1].split("\n")
    if lines == [""]:
        raise MalformedNote("a note has at least one signature line")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"a note has at most {MAX_SIGNATURES} signature lines, not {len(lines)}")
    return Note(text, tuple(_signature(line) for line in lines))


def _trusted(trusted: VerifierKey | Iterable[VerifierKey]) -> dict[tuple[str, bytes], VerifierKey]:
    keys = [trusted] if isinstance(trusted, VerifierKey) else list(trusted)
    return {(k.name, k.key_id): k for k in keys}


def open_note(note: str | bytes, trusted: VerifierKey | Iterable[VerifierKey]) -> str:
    """The text of ``note`` once a trusted key's signature on it verifies; else an error.

    :class:`~audit.MalformedNote` if it is not a note; :class:`~audit.BadSignature`
    if a trusted key's signature fails, or no trusted key signed it.
    """
    parsed = parse_note(note)
    keys = _trusted(trusted)
    message = parsed.text.encode("utf-8")
    verified = []
    for sig in parsed.signatures:
        key = keys.get((sig.name, sig.key_id))
        if key is None:  # an unknown key, even if it shares the name or the id of a known one
            continue
        if not key.verify(message, sig.signature):
            raise BadSignature(f"the signature of trusted key {sig.name!r} ({sig.key_id.hex()}) does not verify",
                               key=sig.name)
        verified.append(sig.name)
    if not verified:
        names = sorted({s.name for s in parsed.signatures})
        raise BadSignature(f"no trusted key signed this note (it is signed by {', '.join(names)})", signers=names)
    return parsed.text


def sign_checkpoint(checkpoint: Checkpoint, *keys: SigningKey) -> str:
    """The checkpoint as a note signed by ``keys``."""
    return sign_note(checkpoint.text(), *keys)


def open_checkpoint(note: str | bytes, trusted: VerifierKey | Iterable[VerifierKey], *,
                    origin: str | None = None) -> Checkpoint:
    """The checkpoint ``note`` holds, once a trusted key's signature verifies; of log ``origin`` if given."""
    checkpoint = Checkpoint.parse(open_note(note, trusted))
    if origin is not None and checkpoint.origin != origin:
        raise InconsistentCheckpoints(f"a checkpoint of log {checkpoint.origin!r}, not of {origin!r}",
                                      origin=checkpoint.origin, expected=origin)
    return checkpoint


def check_consistent(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Refuse ``new`` unless it extends ``old``: same log, not smaller, same tree at equal size, proof verifies.

    :class:`~audit.InconsistentCheckpoints` when the heads contradict each other
    (no proof could link them); :class:`~audit.BadProof` when ``proof`` does
    not link them (from size 0 the proof must be empty: every tree extends
    the empty one).
    """
    if old.origin != new.origin:
        raise InconsistentCheckpoints(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}",
                                      old_origin=old.origin, new_origin=new.origin)
    if new.size < old.size:
        raise InconsistentCheckpoints(f"the tree shrank from {old.size} to {new.size} records",
                                      old_size=old.size, new_size=new.size)
    if new.size == old.size and new.root != old.root:
        raise InconsistentCheckpoints(f"two different trees of {old.size} records (a fork)", size=old.size)
    if old.size == 0:
        if proof:
            raise BadProof("a proof from the empty tree is empty", check="length", size1=0, size2=new.size)
        return
    verify_consistency(old.size, new.size, old.root, new.root, proof)
