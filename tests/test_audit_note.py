"""Signed checkpoints (``audit._note``): the signed-note format, trusted keys, checks between checkpoints."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from audit import (
    EMPTY_ROOT,
    BadProof,
    BadSignature,
    Checkpoint,
    InconsistentCheckpoints,
    MalformedNote,
    SigningKey,
    TreeStore,
    VerifierKey,
    check_consistent,
    leaf_hash,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)

C2SP = Path(__file__).parent / "data" / "c2sp" / "signed-note-example.json"  # see its README.md
ORIGIN = "garrison.example/audit/test"
KEY = SigningKey.from_raw(ORIGIN, bytes(range(32)))
STORE = TreeStore(leaf_hash(i.to_bytes(2, "big")) for i in range(20))


def checkpoint(size: int = 20, origin: str = ORIGIN) -> Checkpoint:
    return Checkpoint(origin, size, STORE.root(size))


# -- format -----------------------------------------------------------------------------------------


def test_a_signed_checkpoint_is_origin_size_root_blank_line_and_signature_lines():
    note = sign_checkpoint(checkpoint(), KEY)
    lines = note.split("\n")
    assert lines[:4] == [ORIGIN, "20", base64.b64encode(STORE.root()).decode(), ""]
    assert lines[4].startswith(f"\u2014 {ORIGIN} ") and lines[5:] == [""]
    blob = base64.b64decode(lines[4].rsplit(" ", 1)[1])
    assert blob[:4] == KEY.verifier.key_id and len(blob) == 4 + 64
    assert KEY.verifier.verify(checkpoint().text().encode(), blob[4:])


def test_the_signed_note_specifications_example_verifies_with_its_verifier_key():
    example = json.loads(C2SP.read_text())
    key = VerifierKey.parse(example["vkey"])
    assert str(key) == example["vkey"] and key.name == "example.com/foo"
    assert open_note(example["note"], key) == example["text"]
    forged = example["note"].replace("example message", "exemplary message")
    with pytest.raises(BadSignature):
        open_note(forged, key)


def test_a_checkpoint_round_trips_through_its_note_with_extensions_and_other_signatures():
    cp = Checkpoint(ORIGIN, 7, STORE.root(7), ("manifest 3f2a", "anchored-at 1700000000"))
    witness = SigningKey.generate("witness.example/w1")
    note = sign_checkpoint(cp, witness, KEY)
    assert open_checkpoint(note, KEY.verifier, origin=ORIGIN) == cp
    assert open_checkpoint(note.encode(), [witness.verifier]) == cp  # bytes, and another trusted key
    assert str(parse_note(note)) == note
    assert len(parse_note(note).signatures) == 2


def test_the_empty_tree_has_a_checkpoint_with_the_empty_root():
    empty = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    assert open_checkpoint(sign_checkpoint(empty, KEY), KEY.verifier) == empty
    with pytest.raises(MalformedNote):
        Checkpoint(ORIGIN, 0, STORE.root(1))


def good_note() -> str:
    return sign_checkpoint(checkpoint(), KEY)


def _resigned(text: str) -> str:
    """A note whose text is ``text``, properly signed by the trusted key: only the format can refuse it."""
    sig = KEY.sign(text.encode())
    return text + "\n" + f"\u2014 {ORIGIN} " + base64.b64encode(KEY.verifier.key_id + sig).decode() + "\n"


def _noncanonical(note: str) -> str:
    """The same signature bytes in another base64 spelling: the unused low bits before '=' set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert note.endswith("=\n") and not note.endswith("==\n")  # 68 bytes: two bits unused
    spare = alphabet[alphabet.index(note[-3]) ^ 1]
    assert base64.b64decode(note[:-3].rsplit(" ", 1)[1] + spare + "=") == base64.b64decode(note[:-1].rsplit(" ", 1)[1])
    return note[:-3] + spare + "=\n"


ROOT_B64 = base64.b64encode(STORE.root()).decode()
MALFORMED_NOTES = {
    "no blank line": (lambda: good_note().replace("\n\n", "\n"), "a blank line"),
    "no signature line": (lambda: good_note().split("\n\n")[0] + "\n\n", "at least one signature"),
    "no final newline": (lambda: good_note()[:-1], "a blank line"),
    "plain dash": (lambda: good_note().replace("\u2014", "-"), "em dash"),
    "no space after the name": (lambda: good_note().replace(f"{ORIGIN} ", ORIGIN), "is not: em dash, name, signature"),
    "signature not base64": (lambda: good_note()[:-3] + "!!\n", "not base64"),
    "signature not canonical base64": (lambda: _noncanonical(good_note()), "not canonical base64"),
    "signature too short": (lambda: good_note().rsplit(" ", 1)[0] + " AAAA\n", "too short"),
    "control character": (lambda: good_note().replace(ORIGIN, ORIGIN + "\t", 1), "control characters"),
    "carriage return": (lambda: good_note().replace("\n", "\r\n"), "control characters"),
    "not utf-8": (lambda: good_note().encode().replace(b"\xe2\x80\x94", b"\xe2\x80"), "UTF-8"),
    "lone surrogate": (lambda: good_note().replace(ORIGIN, ORIGIN + "\ud800", 1), "UTF-8"),
    "too large": (lambda: "x\n" * 40_000 + "\n" + good_note().split("\n\n")[1], "at most 65536 bytes"),
    "too many signatures": (lambda: good_note() + good_note().split("\n\n")[1] * 64, "at most 64 signature"),
    # Properly signed, but the text is not a checkpoint:
    "two lines": (lambda: _resigned(f"{ORIGIN}\n20\n"), "at least three lines"),
    "empty origin": (lambda: _resigned(f"\n20\n{ROOT_B64}\n"), "none of them empty"),
    "leading zero": (lambda: _resigned(f"{ORIGIN}\n020\n{ROOT_B64}\n"), "leading zeros"),
    "negative size": (lambda: _resigned(f"{ORIGIN}\n-20\n{ROOT_B64}\n"), "leading zeros"),
    "unicode digits": (lambda: _resigned(f"{ORIGIN}\n\u0662\u0660\n{ROOT_B64}\n"), "leading zeros"),
    "short root": (lambda: _resigned(f"{ORIGIN}\n20\n{base64.b64encode(b'x' * 31).decode()}\n"), "32 bytes, not 31"),
    "root not base64": (lambda: _resigned(f"{ORIGIN}\n20\n{ROOT_B64[:-2]}*=\n"), "not base64"),
    "empty extension line": (lambda: _resigned(f"{ORIGIN}\n20\n{ROOT_B64}\next\n\nmore\n"), "none of them empty"),
    "size 0 with a root": (lambda: _resigned(f"{ORIGIN}\n0\n{ROOT_B64}\n"), "empty tree's root"),
}


@pytest.mark.parametrize("name", MALFORMED_NOTES)
def test_a_malformed_note_is_refused_as_malformed_for_its_fault(name):
    make, why = MALFORMED_NOTES[name]
    with pytest.raises(MalformedNote) as info:
        open_checkpoint(make(), KEY.verifier)
    assert why in info.value.message


def test_the_malformed_examples_differ_from_a_good_note_only_where_they_say():
    """The cases above are near misses: undo each one's change and the note opens."""
    assert open_checkpoint(_resigned(checkpoint().text()), KEY.verifier) == checkpoint()
    assert open_checkpoint(good_note(), KEY.verifier) == checkpoint()


# -- trust ------------------------------------------------------------------------------------------


def test_a_note_signed_by_another_key_is_refused():
    other = SigningKey.generate(ORIGIN)  # same name, another key: another key id
    with pytest.raises(BadSignature, match="no trusted key"):
        open_checkpoint(sign_checkpoint(checkpoint(), other), KEY.verifier)
    stranger = SigningKey.generate("elsewhere.example/log")
    with pytest.raises(BadSignature, match="no trusted key"):
        open_checkpoint(sign_checkpoint(checkpoint(), stranger), KEY.verifier)


def test_a_signature_claiming_a_trusted_keys_name_and_id_must_verify():
    other = SigningKey.generate(ORIGIN)
    text = checkpoint().text()
    forged = text + "\n" + f"\u2014 {ORIGIN} " + base64.b64encode(KEY.verifier.key_id + other.sign(text.encode())).decode() + "\n"
    with pytest.raises(BadSignature, match="does not verify"):
        open_checkpoint(forged, KEY.verifier)
    with pytest.raises(BadSignature, match="does not verify"):  # even beside a good one
        open_checkpoint(forged + good_note().split("\n\n")[1], KEY.verifier)


def test_a_changed_text_breaks_the_signature():
    note = good_note().replace("\n20\n", "\n21\n")
    with pytest.raises(BadSignature):
        open_checkpoint(note, KEY.verifier)


def test_unknown_signatures_are_ignored_beside_a_trusted_one():
    junk = f"\u2014 someone.example/x {base64.b64encode(bytes(68)).decode()}\n"
    assert open_checkpoint(good_note() + junk, KEY.verifier) == checkpoint()


def test_a_checkpoint_of_another_log_is_refused_when_the_origin_is_expected():
    with pytest.raises(InconsistentCheckpoints):
        open_checkpoint(sign_checkpoint(checkpoint(origin="other.example/log"), KEY), KEY.verifier, origin=ORIGIN)


def test_signing_refuses_text_that_is_not_a_note_text():
    with pytest.raises(MalformedNote):
        sign_note("no newline", KEY)
    with pytest.raises(ValueError):
        sign_note("text\n")


# -- two checkpoints ------------------------------------------------------------------------------


def test_a_grown_tree_with_a_verifying_proof_is_consistent():
    for old in (0, 1, 5, 8, 19, 20):
        check_consistent(checkpoint(old), checkpoint(20), STORE.consistency_proof(old, 20) if old else [])


def test_a_tree_that_shrinks_is_refused():
    with pytest.raises(InconsistentCheckpoints, match="shrank"):
        check_consistent(checkpoint(20), checkpoint(12), [])


def test_two_different_trees_of_one_size_are_a_fork():
    forked = Checkpoint(ORIGIN, 20, leaf_hash(b"fork"))
    with pytest.raises(InconsistentCheckpoints, match="fork"):
        check_consistent(checkpoint(20), forked, [])
    check_consistent(checkpoint(20), checkpoint(20), [])  # the same head twice is fine


def test_checkpoints_of_two_logs_are_refused():
    with pytest.raises(InconsistentCheckpoints, match="two logs"):
        check_consistent(checkpoint(5, origin="a.example/log"), checkpoint(20), STORE.consistency_proof(5))


def test_a_consistency_proof_that_does_not_verify_is_refused():
    proof = STORE.consistency_proof(5, 20)
    with pytest.raises(BadProof):
        check_consistent(checkpoint(5), checkpoint(20), proof[:-1])
    with pytest.raises(BadProof):
        check_consistent(checkpoint(6), checkpoint(20), proof)  # the proof of another size
    rewritten = Checkpoint(ORIGIN, 20, TreeStore(leaf_hash(b"%d" % i) for i in range(20)).root())
    with pytest.raises(BadProof):
        check_consistent(checkpoint(5), rewritten, proof)  # history rewritten under the old head
    with pytest.raises(BadProof):
        check_consistent(Checkpoint(ORIGIN, 0, EMPTY_ROOT), checkpoint(20), proof)
