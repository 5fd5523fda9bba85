"""Ed25519 note keys (``audit._keys``): key ids, vkey text, PEM and raw key files."""

from __future__ import annotations

import base64
import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from audit import KeyFileError, SigningKey, VerifierKey, read_signing_key, read_verifier_key, write_signing_key
from audit._keys import check_key_name

NAME = "garrison.example/audit"


def test_the_key_id_is_the_signed_note_hash_of_name_type_and_public_key():
    key = SigningKey.generate(NAME).verifier
    assert key.key_id == hashlib.sha256(NAME.encode() + b"\n\x01" + key.public).digest()[:4]


def test_a_vkey_round_trips_even_when_its_base64_holds_a_plus():
    for _ in range(20):  # about one key in two has a "+" in its base64
        key = SigningKey.generate(NAME).verifier
        text = str(key)
        assert text.startswith(f"{NAME}+{key.key_id.hex()}+")
        assert VerifierKey.parse(text) == key
    assert any("+" in str(SigningKey.from_raw(NAME, bytes([i]) * 32).verifier).split("+", 2)[2] for i in range(40))


@pytest.mark.parametrize("mangle, why", [
    (lambda v: v.replace("+", "-"), "name\\+hex"),
    (lambda v: "+".join(v.split("+", 2)[:2]), "name\\+hex"),
    (lambda v: v.split("+", 2)[0] + "+" + "00000000" + "+" + v.split("+", 2)[2], "does not match"),
    (lambda v: v.split("+", 2)[0] + "+" + v.split("+", 2)[1].upper() + "+" + v.split("+", 2)[2], "lowercase hex"),
    (lambda v: v.split("+", 2)[0] + "+" + v.split("+", 2)[1] + "+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
     "not an Ed25519 key"),
    (lambda v: v[:-4] + "!!!=", "not base64"),
    (lambda v: "bad name" + v[len(NAME):], "cannot name a key"),
])
def test_a_bad_vkey_is_refused_for_its_fault(mangle, why):
    text = mangle(str(SigningKey.from_raw(NAME, bytes(range(32))).verifier))
    with pytest.raises(KeyFileError, match=why):
        VerifierKey.parse(text)


@pytest.mark.parametrize("name", ["", "two words", "a+b", "tab\there", "nl\n", "nbsp\u00a0"])
def test_a_key_name_has_no_spaces_no_plus_and_is_not_empty(name):
    with pytest.raises(KeyFileError):
        check_key_name(name)
    with pytest.raises(KeyFileError):
        SigningKey.generate(name)


@pytest.mark.parametrize("raw", [False, True])
def test_a_signing_key_file_is_private_is_never_overwritten_and_reads_back(tmp_path, raw):
    key = SigningKey.generate(NAME)
    path = write_signing_key(tmp_path / "log.key", key, raw=raw)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY") != raw
    again = read_signing_key(path, NAME)
    assert again.verifier == key.verifier and again.raw() == key.raw()
    with pytest.raises(KeyFileError, match="cannot create"):
        write_signing_key(path, SigningKey.generate(NAME))
    assert read_signing_key(path, NAME).verifier == key.verifier


def test_a_verifier_key_file_may_be_pem_raw_or_a_vkey_line(tmp_path):
    key = SigningKey.generate(NAME).verifier
    (tmp_path / "pem").write_bytes(key.to_pem())
    (tmp_path / "raw").write_bytes(key.public)
    (tmp_path / "vkey").write_text(str(key) + "\n")
    for name in ("pem", "raw", "vkey"):
        assert read_verifier_key(tmp_path / name, NAME) == key
    assert read_verifier_key(tmp_path / "vkey") == key  # a vkey names itself
    for name in ("pem", "raw"):
        with pytest.raises(KeyFileError, match="carries no name"):
            read_verifier_key(tmp_path / name)
    with pytest.raises(KeyFileError, match="not 'other"):
        read_verifier_key(tmp_path / "vkey", "other.example/log")


def test_what_is_not_an_ed25519_key_is_refused_as_a_key_file_error(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    (tmp_path / "ec.pub").write_bytes(ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "short").write_bytes(b"\x01" * 31)
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    (tmp_path / "binary").write_bytes(b"\xff" * 40)
    for path, read, why in [("ec.pem", read_signing_key, "not an Ed25519"), ("short", read_signing_key, "32 bytes"),
                            ("junk.pem", read_signing_key, "not an unencrypted PEM"),
                            ("missing", read_signing_key, "cannot read"),
                            ("ec.pub", read_verifier_key, "not an Ed25519"),
                            ("binary", read_verifier_key, "neither PEM"), ("short", read_verifier_key, "name\\+hex")]:
        with pytest.raises(KeyFileError, match=why):
            read(tmp_path / path, NAME)


def test_a_signing_keys_repr_shows_its_name_and_id_not_its_secret():
    key = SigningKey.from_raw(NAME, bytes(range(32)))
    assert repr(key) == f"SigningKey({NAME!r}, key_id={key.verifier.key_id.hex()})"
    assert key.raw().hex() not in repr(key)


def test_a_signature_verifies_only_with_its_key_and_message():
    key, other = SigningKey.generate(NAME), SigningKey.generate(NAME)
    sig = key.sign(b"message")
    assert key.verifier.verify(b"message", sig)
    assert not key.verifier.verify(b"massage", sig)
    assert not other.verifier.verify(b"message", sig)
