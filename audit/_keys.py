"""Ed25519 keys for signed notes: generate, store, load, and the verifier-key text.

A key has a *name* (non-empty, no whitespace, no ``+``; a schema-less URL
such as ``garrison.example/audit`` is the recommended shape) and a 4-byte
*key id* fixed by the name and the public key (C2SP signed-note, signature
type 0x01)::

    key id = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]

A verifier key travels as one line of text (a *vkey*)::

    <name>+<hex key id>+<base64(0x01 || 32-byte public key)>

Files: a signing key is stored as PKCS#8 PEM (the default) or as its raw
32-byte seed, created with mode 0600 and never overwritten; a verifier key as
SubjectPublicKeyInfo PEM, the raw 32 bytes, or a vkey line.  Neither PEM nor
raw bytes carry the name, so readers take it as an argument; a vkey carries
its own.

Invariants:

- A :class:`SigningKey`'s private bytes leave it only through
  :meth:`~SigningKey.to_pem`, :meth:`~SigningKey.raw` and
  :func:`write_signing_key`; its ``repr`` shows the name and key id only.
- Every failure to read a key (bad PEM, wrong key type, wrong length, bad
  name, bad vkey) is :class:`~audit.KeyFileError`, with the cause chained.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .exceptions import KeyFileError

__all__ = [
    "ED25519",
    "SigningKey",
    "VerifierKey",
    "check_key_name",
    "read_signing_key",
    "read_verifier_key",
    "write_signing_key",
]

#: The signed-note signature type byte of Ed25519.
ED25519 = 0x01
_KEY_BYTES = 32


def check_key_name(name: str) -> str:
    """``name`` if it can name a key (non-empty, no whitespace, no ``+``), else :class:`~audit.KeyFileError`."""
    if not isinstance(name, str) or not name or "+" in name or any(ch.isspace() or ord(ch) < 0x20 for ch in name):
        raise KeyFileError(f"{name!r} cannot name a key: it must be non-empty, without spaces or '+'")
    return name


def strict_b64decode(text: str) -> bytes:
    """Standard base64 with padding, nothing else: exactly one text per byte string (else ValueError)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return data


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named Ed25519 public key: what a verifier trusts."""

    name: str
    public: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public) != _KEY_BYTES:
            raise KeyFileError(f"an Ed25519 public key is {_KEY_BYTES} bytes, not {len(self.public)}")

    @property
    def key_id(self) -> bytes:
        """The 4-byte id that signature lines carry before the signature."""
        return _key_id(self.name, self.public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes, no key id) is this key's over ``message``."""
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __str__(self) -> str:
        """The vkey line: ``name+hex(key id)+base64(0x01 || public key)``."""
        blob = base64.b64encode(bytes([ED25519]) + self.public).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """The key a vkey line describes; :class:`~audit.KeyFileError` if it is not one, or its id is wrong."""
        parts = vkey.strip().split("+", 2)  # base64 may hold "+"; names and hex ids may not
        if len(parts) != 3:
            raise KeyFileError("a vkey is name+hex(key id)+base64(type || public key)")
        name, hex_id, blob = parts
        try:
            key_id = bytes.fromhex(hex_id) if len(hex_id) == 8 and hex_id == hex_id.lower() else b""
            data = strict_b64decode(blob)
        except ValueError as exc:
            raise KeyFileError(f"vkey {name!r}: {exc}") from exc
        if len(key_id) != 4:
            raise KeyFileError(f"vkey {name!r}: the key id is 8 lowercase hex digits, not {hex_id!r}")
        if len(data) != 1 + _KEY_BYTES or data[0] != ED25519:
            raise KeyFileError(f"vkey {name!r} is not an Ed25519 key (type 0x01 and 32 bytes)")
        key = cls(name, data[1:])
        if key.key_id != key_id:
            raise KeyFileError(f"vkey {name!r}: key id {hex_id} does not match its name and key")
        return key

    def to_pem(self) -> bytes:
        public = ed25519.Ed25519PublicKey.from_public_bytes(self.public)
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class SigningKey:
    """A named Ed25519 private key: what a log signs its checkpoints with."""

    __slots__ = ("_name", "_private", "_verifier")

    def __init__(self, name: str, private: ed25519.Ed25519PrivateKey) -> None:
        self._name = check_key_name(name)
        self._private = private
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._verifier = VerifierKey(name, public)

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(name, ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, name: str, seed: bytes) -> SigningKey:
        """From the 32-byte RFC 8032 private key (the seed)."""
        if len(seed) != _KEY_BYTES:
            raise KeyFileError(f"a raw Ed25519 private key is {_KEY_BYTES} bytes, not {len(seed)}")
        return cls(name, ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_pem(cls, name: str, pem: bytes) -> SigningKey:
        """From an unencrypted PKCS#8 PEM Ed25519 private key."""
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise KeyFileError(f"a {type(private).__name__}, not an Ed25519 private key")
        return cls(name, private)

    @property
    def name(self) -> str:
        return self._name

    @property
    def verifier(self) -> VerifierKey:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def raw(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption())

    def to_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def __repr__(self) -> str:
        return f"SigningKey({self._name!r}, key_id={self._verifier.key_id.hex()})"


def write_signing_key(path: str | os.PathLike[str], key: SigningKey, *, raw: bool = False) -> Path:
    """Store ``key`` in a new file of mode 0600 (PEM, or the raw seed); an existing file is never replaced."""
    path = Path(path)
    data = key.raw() if raw else key.to_pem()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc


def read_signing_key(path: str | os.PathLike[str], name: str) -> SigningKey:
    """The signing key in ``path`` (PEM, or exactly 32 raw bytes), named ``name``."""
    data = _read(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        return SigningKey.from_pem(name, data)
    return SigningKey.from_raw(name, data)


def read_verifier_key(path: str | os.PathLike[str], name: str | None = None) -> VerifierKey:
    """The verifier key in ``path``: a vkey line (its name must be ``name`` if given), PEM or 32 raw bytes."""
    data = _read(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"{path}: not a PEM public key: {exc}") from exc
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise KeyFileError(f"{path}: a {type(public).__name__}, not an Ed25519 public key")
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif len(data) == _KEY_BYTES:
        raw = data
    else:
        try:
            key = VerifierKey.parse(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"{path}: neither PEM, 32 raw bytes nor a vkey line") from exc
        if name is not None and key.name != name:
            raise KeyFileError(f"{path}: the vkey names {key.name!r}, not {name!r}")
        return key
    if name is None:
        raise KeyFileError(f"{path}: a PEM or raw public key carries no name: pass one")
    return VerifierKey(name, raw)
