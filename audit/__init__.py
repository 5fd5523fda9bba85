"""The tamper-evident audit log's pure core: records, Merkle tree, signed checkpoints.

Three layers, each a small set of pure functions and values (no I/O but the
key-file helpers, no clock: times are passed in):

- :mod:`audit._chain`: hash-chained records (canonical msgpack of index,
  time, kind, body and the previous record's hash) and :func:`verify_chain`,
  which names the first bad record and why (:class:`Fault`).
- :mod:`audit._merkle`: RFC 6962 hashing, the tree head at any size
  (:class:`Frontier` for a writer, :class:`TreeStore` for a prover), and the
  pure verifiers :func:`verify_inclusion` and :func:`verify_consistency`.
- :mod:`audit._note` and :mod:`audit._keys`: checkpoints (origin, size,
  root) as Ed25519 signed notes in the transparency logs' text format, and
  the checks between two of them (:func:`check_consistent`).

Invariants across the layers:

- A record's hash *is* its RFC 6962 leaf hash, ``SHA-256(0x00 || record
  bytes)``: the chain's links and the tree's leaves are the same values.
- Nothing here trusts what it is checking: every verifier either returns a
  result it proved or raises an :class:`AuditError` saying which check failed.

It depends only on :mod:`protocols` (the root error, and
``protocols.canonical_bytes``, the house's one canonical encoding) and the
``cryptography`` package; nothing of Garrison depends on it yet.
"""

from ._chain import GENESIS, Chain, ChainReport, Fault, Record, Tamper, decode_record, verify_chain
from ._keys import SigningKey, VerifierKey, read_signing_key, read_verifier_key, write_signing_key
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
from .exceptions import (
    AuditError,
    BadProof,
    BadSignature,
    InconsistentCheckpoints,
    KeyFileError,
    MalformedNote,
    TamperDetected,
)

__all__ = [
    "AuditError",
    "BadProof",
    "BadSignature",
    "Chain",
    "ChainReport",
    "Checkpoint",
    "EMPTY_ROOT",
    "Fault",
    "Frontier",
    "GENESIS",
    "InconsistentCheckpoints",
    "KeyFileError",
    "MalformedNote",
    "Note",
    "NoteSignature",
    "Record",
    "SigningKey",
    "Tamper",
    "TamperDetected",
    "TreeStore",
    "VerifierKey",
    "check_consistent",
    "decode_record",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_note",
    "read_signing_key",
    "read_verifier_key",
    "root_of",
    "sign_checkpoint",
    "sign_note",
    "verify_chain",
    "verify_consistency",
    "verify_inclusion",
    "write_signing_key",
]
