"""Exceptions raised by the audit log's core.

A log that verifies raises nothing; these say what is wrong when it does not,
or what is wrong with a key or a note someone hands in.  They hang under the
one root every Garrison error has (:class:`protocols.GarrisonError`)::

    GarrisonError
    └── AuditError                  (this module)
        ├── TamperDetected          a record is not what the chain commits to (``index``, ``reason``)
        ├── BadProof                an inclusion or consistency proof does not verify (``check``)
        ├── BadSignature            a note has no valid signature by a trusted key
        ├── MalformedNote           text is not a well-formed signed note or checkpoint
        ├── InconsistentCheckpoints two checkpoints cannot both be true: other origin, shrunk tree, fork
        ├── KeyFileError            a key file or key text cannot be read as an Ed25519 key
        ├── TornRecord              the records file ends in part of a record (a crash mid-append)
        ├── LogStorageError         the log's files cannot be read or written (the OSError is chained)
        ├── AnchorFailed            an anchor refused or failed to take a checkpoint (it is on disk)
        ├── OperatorsFileError      the operators file cannot be read or says something invalid
        └── AccessDenied            an operator's call was refused (``check`` names why)
            ├── Unauthenticated     not proven to come from the operator it names
            └── Forbidden           proven, but none of the operator's roles grants the action

Neighbours, told apart: ``MalformedNote`` is "this is not a note" (nothing
was checked cryptographically); ``BadSignature`` is "a well-formed note, not
vouched for by a key you trust".  ``BadProof`` is "this proof does not link
these two tree heads"; ``InconsistentCheckpoints`` is "no proof could": the
heads themselves contradict each other (a newer one is smaller, or two heads
of one size differ), which is evidence against the log, not against a proof.
``TornRecord`` is "the file stops mid-record", what a crash during an append
leaves (repairable with :func:`~audit.repair_log`); ``TamperDetected`` is
"whole records that are not what the chain commits to", never repaired.
``LogStorageError`` is the file system failing us, not evidence about the log.
"""

from __future__ import annotations

from protocols.exceptions import GarrisonError

__all__ = [
    "AccessDenied",
    "AnchorFailed",
    "AuditError",
    "BadProof",
    "BadSignature",
    "Forbidden",
    "InconsistentCheckpoints",
    "KeyFileError",
    "LogStorageError",
    "MalformedNote",
    "OperatorsFileError",
    "TamperDetected",
    "TornRecord",
    "Unauthenticated",
]


class AuditError(GarrisonError):
    """Root of the audit log's errors."""


class TamperDetected(AuditError):
    """A record of the log is not what the chain commits to; ``index`` is the first bad one.

    ``reason`` is a :class:`~audit.Fault` value (``"modified"``, ``"deleted"``,
    ``"inserted"``, ``"reordered"``, ``"malformed"``).
    """

    @property
    def index(self) -> int:
        return int(self.details["index"])

    @property
    def reason(self) -> str:
        return str(self.details["reason"])


class BadProof(AuditError):
    """An inclusion or consistency proof does not verify; ``check`` names the check that refused it."""

    @property
    def check(self) -> str:
        return str(self.details["check"])


class BadSignature(AuditError):
    """A note carries no valid signature by a trusted key, or a trusted key's signature fails."""


class MalformedNote(AuditError):
    """The text is not a well-formed signed note, or its body is not a well-formed checkpoint."""


class InconsistentCheckpoints(AuditError):
    """Two checkpoints cannot both be true: other origin, a tree that shrank, or a fork at one size."""


class KeyFileError(AuditError):
    """A key file or key text cannot be read as an Ed25519 key of the expected kind."""


class TornRecord(AuditError):
    """The records file ends in part of a record; ``index`` is that record's, ``offset`` where it starts.

    What a crash in the middle of an append leaves.  Nothing truncates it but
    an explicit :func:`~audit.repair_log`.
    """

    @property
    def index(self) -> int:
        return int(self.details["index"])

    @property
    def offset(self) -> int:
        return int(self.details["offset"])


class LogStorageError(AuditError):
    """A file of the log cannot be read or written (the ``OSError`` is chained); says nothing of tampering."""


class AnchorFailed(AuditError):
    """An anchor raised on a new checkpoint; the checkpoint is already on disk and the log goes on."""


class OperatorsFileError(AuditError):
    """The operators file cannot be read, or a field of it is invalid (which one, in the message)."""


class AccessDenied(AuditError):
    """An operator's call was refused; ``check`` names the check that refused it (see :mod:`audit._operators`)."""

    @property
    def check(self) -> str:
        return str(self.details["check"])


class Unauthenticated(AccessDenied):
    """The call is not proven to come from the operator it names (no, a bad or a stale credential)."""


class Forbidden(AccessDenied):
    """The operator is who they say, but none of their roles grants the action (``who``)."""
