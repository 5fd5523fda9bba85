"""The tamper-evident audit log: records, Merkle tree, signed checkpoints, and the log on disk.

Four layers, each a small set of pure functions and values (no I/O but the
key-file helpers and the log's files, no clock: times are passed in):

- :mod:`audit._chain`: hash-chained records (canonical msgpack of index,
  time, kind, body and the previous record's hash) and :func:`verify_chain`,
  which names the first bad record and why (:class:`Fault`).
- :mod:`audit._merkle`: RFC 6962 hashing, the tree head at any size
  (:class:`Frontier` for a writer, :class:`TreeStore` for a prover), and the
  pure verifiers :func:`verify_inclusion` and :func:`verify_consistency`.
- :mod:`audit._note` and :mod:`audit._keys`: checkpoints (origin, size,
  root) as Ed25519 signed notes in the transparency logs' text format, and
  the checks between two of them (:func:`check_consistent`).
- :mod:`audit._files`, :mod:`audit._log` and :mod:`audit._verify`: the log
  on disk (a framed ``records`` file and a ``checkpoints/`` directory of
  signed notes), its writer :class:`AuditLog` with its anchors, and the
  offline checks :func:`verify_log`, :func:`prove_inclusion` and
  :func:`prove_consistency` that ``garrison audit`` runs.
- :mod:`audit._operators`: who may act: the operators file (names, roles,
  Ed25519 keys), signed operator calls and :func:`authorize`, which admits
  a call or says which check refused it.

Invariants across the layers:

- A record's hash *is* its RFC 6962 leaf hash, ``SHA-256(0x00 || record
  bytes)``: the chain's links and the tree's leaves are the same values.
- Nothing here trusts what it is checking: every verifier either returns a
  result it proved or raises an :class:`AuditError` saying which check failed.

It depends only on :mod:`protocols` (the root error, and
``protocols.canonical_bytes``, the house's one canonical encoding) and the
``cryptography`` package.
"""

from ._chain import GENESIS, Chain, ChainReport, Fault, Record, Tamper, decode_record, verify_chain
from ._keys import SigningKey, VerifierKey, read_signing_key, read_verifier_key, write_signing_key
from ._log import Anchor, AuditLog, DirectoryAnchor, repair_log
from ._merkle import (
    EMPTY_ROOT,
    Frontier,
    TreeStore,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from ._note import (
    Checkpoint,
    Note,
    NoteSignature,
    check_consistent,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)
from ._operators import (
    ACTIONS,
    GRANTS,
    Credential,
    Identity,
    Operator,
    OperatorKey,
    ReplayGuard,
    Role,
    Roster,
    authorize,
)
from ._verify import LogProver, LogReport, prove_consistency, prove_inclusion, read_log, verify_log
from .exceptions import (
    AccessDenied,
    AnchorFailed,
    AuditError,
    BadProof,
    BadSignature,
    Forbidden,
    InconsistentCheckpoints,
    KeyFileError,
    LogStorageError,
    MalformedNote,
    OperatorsFileError,
    TamperDetected,
    TornRecord,
    Unauthenticated,
)

__all__ = [
    "ACTIONS",
    "AccessDenied",
    "Anchor",
    "AnchorFailed",
    "AuditError",
    "AuditLog",
    "BadProof",
    "BadSignature",
    "Chain",
    "ChainReport",
    "Checkpoint",
    "Credential",
    "DirectoryAnchor",
    "EMPTY_ROOT",
    "Fault",
    "Forbidden",
    "Frontier",
    "GENESIS",
    "GRANTS",
    "Identity",
    "InconsistentCheckpoints",
    "KeyFileError",
    "LogProver",
    "LogReport",
    "LogStorageError",
    "MalformedNote",
    "Note",
    "NoteSignature",
    "Operator",
    "OperatorKey",
    "OperatorsFileError",
    "Record",
    "ReplayGuard",
    "Role",
    "Roster",
    "SigningKey",
    "Tamper",
    "TamperDetected",
    "TornRecord",
    "TreeStore",
    "Unauthenticated",
    "VerifierKey",
    "authorize",
    "check_consistent",
    "decode_record",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "prove_consistency",
    "prove_inclusion",
    "read_log",
    "read_signing_key",
    "read_verifier_key",
    "repair_log",
    "root_of",
    "sign_checkpoint",
    "sign_note",
    "verify_chain",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "write_signing_key",
]
