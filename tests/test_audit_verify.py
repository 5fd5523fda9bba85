"""Tampering with a log on disk, found by verify_log and by ``garrison audit verify``; proofs from the files.

The log: 40 records, a checkpoint every 10 (files 10, 20, 30, 40).  Each case
tampers with the files as an attacker without the signing key could, and names
the index, the reason, and how many checkpoints passed before the fault (which
shows the check that fired is the one the case is about).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit import (
    AuditLog,
    BadProof,
    Checkpoint,
    LogProver,
    SigningKey,
    VerifierKey,
    decode_record,
    open_checkpoint,
    prove_consistency,
    prove_inclusion,
    sign_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from audit._files import frame, read_records
from runtime.cli import commands

ROOT = Path(__file__).resolve().parent.parent
KEY = SigningKey.generate("garrison.test/audit")
OTHER = SigningKey.generate("garrison.test/audit")  # same name, another key: what a forger would use
ORIGIN = "garrison.test/audit/log-1"


def make_log(directory: Path, n: int = 40, every: int = 10) -> Path:
    ticks = itertools.count(1000)
    with AuditLog(directory, KEY, ORIGIN, clock=lambda: float(next(ticks)), checkpoint_every=every) as log:
        for i in range(n):
            log.append("test.event", {"i": i, "blob": bytes([i % 256]) * 3})
    return directory


def rewrite(directory: Path, change) -> None:
    records, _ = read_records(directory)
    (directory / "records").write_bytes(b"".join(frame(r) for r in change(list(records))))


def note_path(directory: Path, size: int) -> Path:
    return directory / "checkpoints" / f"{size:020d}.note"


def modify(records):
    r = decode_record(records[15])
    records[15] = type(r)(r.index, r.time, r.kind, {"i": 999, "blob": b"x"}, r.prev_hash).encode()
    return records


def modify_last(records):
    r = decode_record(records[39])
    records[39] = type(r)(r.index, r.time + 1, r.kind, r.body, r.prev_hash).encode()
    return records


def resign_by_other_key(d):
    cp = open_checkpoint(note_path(d, 20).read_bytes(), KEY.verifier)
    note_path(d, 20).write_text(sign_checkpoint(cp, OTHER))


def torn(d):
    with open(d / "records", "ab") as f:
        f.write(b"\x00\x00\x01\x00torn")


#: name -> (tamper with the directory, index, reason, checkpoints verified before the fault)
CASES = {
    "record modified": (lambda d: rewrite(d, modify), 15, "modified", 0),
    "record deleted": (lambda d: rewrite(d, lambda r: r[:15] + r[16:]), 15, "deleted", 0),
    "record inserted": (lambda d: rewrite(d, lambda r: r[:15] + [r[5]] + r[15:]), 15, "inserted", 0),
    "records reordered": (lambda d: rewrite(d, lambda r: r[:15] + [r[16], r[15]] + r[17:]), 15, "reordered", 0),
    "last record modified": (lambda d: rewrite(d, modify_last), 40, "root-mismatch", 3),
    "log truncated behind a checkpoint": (lambda d: rewrite(d, lambda r: r[:35]), 35, "truncated", 3),
    "checkpoint signed by another key": (resign_by_other_key, 20, "bad-signature", 1),
    "tree shrinks": (lambda d: shutil.copy(note_path(d, 10), note_path(d, 30)), 30, "shrunk", 2),
    "checkpoint misnamed": (lambda d: os.replace(note_path(d, 40), note_path(d, 50)), 50, "misnamed", 3),
    "torn last record": (torn, 40, "torn", 0),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_log(tmp_path_factory.mktemp("audit") / "log")


@pytest.fixture
def log_dir(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "log"))


def test_an_untouched_log_verifies(log_dir):
    report = verify_log(log_dir, [KEY.verifier])
    assert report.ok and (report.records, report.checkpoints, report.verified) == (40, 4, 4)
    assert report.root == open_checkpoint(note_path(log_dir, 40).read_bytes(), KEY.verifier).root.hex()


@pytest.mark.parametrize("case", CASES)
def test_tampering_is_found_at_its_index_with_its_reason(log_dir, case):
    tamper, index, reason, verified = CASES[case]
    tamper(log_dir)
    report = verify_log(log_dir, [KEY.verifier])
    assert (report.ok, report.index, report.reason, report.verified) == (False, index, reason, verified), report


def run(*args: str, as_json: bool = True):
    return CliRunner().invoke(commands, ["audit", *args], env={"GARRISON_JSON": "1" if as_json else ""})


@pytest.mark.parametrize("case", CASES)
def test_garrison_audit_verify_exits_1_naming_the_index_and_reason(log_dir, case):
    tamper, index, reason, _ = CASES[case]
    tamper(log_dir)
    out = run("verify", str(log_dir), "--key", str(KEY.verifier))
    assert out.exit_code == 1, out.output
    report = json.loads(out.stdout)
    assert (report["ok"], report["index"], report["reason"]) == (False, index, reason)
    assert f"{reason} at index {index}" in out.stderr


def test_garrison_audit_verify_takes_a_key_file_and_exits_0_on_an_untouched_log(log_dir, tmp_path):
    (tmp_path / "vkey").write_text(str(KEY.verifier) + "\n")
    out = run("verify", str(log_dir), "--key", str(tmp_path / "vkey"))
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["ok"] is True


def test_garrison_audit_verify_exits_2_on_an_unreadable_directory_or_a_bad_key(tmp_path, log_dir):
    out = run("verify", str(tmp_path / "missing"), "--key", str(KEY.verifier))
    assert out.exit_code == 2 and "LogStorageError" in out.stderr
    out = run("verify", str(log_dir), "--key", "not-a-key")
    assert out.exit_code == 2 and "KeyFileError" in out.stderr


def test_the_console_script_finds_a_deleted_record_in_a_real_process(log_dir):
    rewrite(log_dir, lambda r: r[:7] + r[8:])
    out = subprocess.run([sys.executable, "-m", "supervisors.cli", "audit", "verify", str(log_dir), "--key",
                          str(KEY.verifier), "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         check=False)
    assert out.returncode == 1, out.stderr
    assert (json.loads(out.stdout)["index"], json.loads(out.stdout)["reason"]) == (7, "deleted")


def test_show_prints_records_with_bytes_as_hex(log_dir):
    out = run("show", str(log_dir), "--from", "3", "--limit", "2")
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout)
    assert [(r["index"], r["body"]) for r in records] == [(3, {"i": 3, "blob": "030303"}), (4, {"i": 4, "blob": "040404"})]
    assert len(bytes.fromhex(records[0]["prev_hash"])) == 32


def test_keygen_writes_a_0600_key_and_prints_its_verifier_line(tmp_path):
    out = run("keygen", "ops.example/audit", "--out", str(tmp_path / "signing.pem"), as_json=False)
    assert out.exit_code == 0, out.output
    assert VerifierKey.parse(out.stdout.strip()).name == "ops.example/audit"  # the bare line, to paste
    again = run("keygen", "ops.example/other", "--out", str(tmp_path / "other.pem"))
    assert VerifierKey.parse(json.loads(again.stdout)["verifier"]).name == "ops.example/other"
    assert (tmp_path / "signing.pem").stat().st_mode & 0o777 == 0o600
    again = run("keygen", "ops.example/audit", "--out", str(tmp_path / "signing.pem"))
    assert again.exit_code == 2 and "KeyFileError" in again.stderr


# -- proofs ------------------------------------------------------------------------------------------


def _b(hexes):
    return [bytes.fromhex(h) for h in hexes]


def test_inclusion_and_consistency_proofs_verify_for_every_record_against_signed_roots(tmp_path):
    d = make_log(tmp_path / "big", n=3000, every=1000)
    roots = {s: open_checkpoint(note_path(d, s).read_bytes(), KEY.verifier).root for s in (1000, 2000, 3000)}
    prover = LogProver.of(d)
    checked = 0
    for size, root in roots.items():
        for index in range(size) if size == 3000 else range(0, size, 97):
            p = prover.inclusion(index, size)
            verify_inclusion(index, size, bytes.fromhex(p["leaf_hash"]), _b(p["proof"]), root)
            checked += 1
    assert checked == 3000 + 11 + 21
    for a, b in itertools.combinations(sorted(roots), 2):
        p = prover.consistency(a, b)
        verify_consistency(a, b, roots[a], roots[b], _b(p["proof"]))
    for a in range(1, 3000, 89):  # and from sizes no checkpoint names
        p = prove_consistency(d, a, 3000) if a == 1 else prover.consistency(a, 3000)
        verify_consistency(a, 3000, bytes.fromhex(p["root1"]), roots[3000], _b(p["proof"]))


def test_mutated_proofs_are_refused(tmp_path):
    d = make_log(tmp_path / "log", n=300, every=100)
    root = open_checkpoint(note_path(d, 300).read_bytes(), KEY.verifier).root
    p = prove_inclusion(d, 123)
    leaf, proof = bytes.fromhex(p["leaf_hash"]), _b(p["proof"])
    verify_inclusion(123, 300, leaf, proof, root)
    refused = 0
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(BadProof):
            verify_inclusion(123, 300, leaf, bad, root)
        refused += 1
    with pytest.raises(BadProof):
        verify_inclusion(124, 300, leaf, proof, root)
    with pytest.raises(BadProof):
        verify_inclusion(123, 300, leaf, proof[:-1], root)
    assert refused == len(proof) > 5
    c = prove_consistency(d, 100)
    old = open_checkpoint(note_path(d, 100).read_bytes(), KEY.verifier).root
    verify_consistency(100, 300, old, root, _b(c["proof"]))
    with pytest.raises(BadProof):
        verify_consistency(100, 300, old, root, _b(c["proof"])[1:])


def test_garrison_audit_prove_gives_proofs_the_pure_verifiers_accept(log_dir):
    root40 = open_checkpoint(note_path(log_dir, 40).read_bytes(), KEY.verifier).root
    root20 = open_checkpoint(note_path(log_dir, 20).read_bytes(), KEY.verifier).root
    out = run("prove", str(log_dir), "--index", "17", "--size", "40")
    assert out.exit_code == 0, out.output
    p = json.loads(out.stdout)
    verify_inclusion(17, 40, bytes.fromhex(p["leaf_hash"]), _b(p["proof"]), root40)
    out = run("prove", str(log_dir), "--from-size", "20")
    c = json.loads(out.stdout)
    assert out.exit_code == 0 and (c["size1"], c["size2"]) == (20, 40)
    verify_consistency(20, 40, root20, root40, _b(c["proof"]))
    assert run("prove", str(log_dir), "--index", "3", "--from-size", "2").exit_code == 2  # usage
    out = run("prove", str(log_dir), "--index", "40")
    assert out.exit_code == 2 and "no record 40" in out.stderr


def test_a_forged_checkpoint_with_the_right_root_but_another_key_is_refused(log_dir):
    forged = sign_checkpoint(Checkpoint(ORIGIN, 40, bytes(32)), OTHER)
    note_path(log_dir, 40).write_text(forged)
    report = verify_log(log_dir, [KEY.verifier])
    assert (report.index, report.reason) == (40, "bad-signature")
    assert verify_log(log_dir, [KEY.verifier, OTHER.verifier]).reason == "root-mismatch"
