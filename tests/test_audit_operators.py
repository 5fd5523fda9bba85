"""Operators as identities (``audit._operators``, ``runtime._gatekeeper``): pure logic, injected clocks.

Each refusal is checked by the name of the check that refused it, so a test
that means "a bad signature" cannot pass because the name was unknown.
"""

from __future__ import annotations

import os

import pytest

from audit import (
    ACTIONS,
    GRANTS,
    Forbidden,
    OperatorKey,
    OperatorsFileError,
    ReplayGuard,
    Role,
    Roster,
    SigningKey,
    Unauthenticated,
    authorize,
)
from protocols import GarrisonError
from runtime._gatekeeper import UNVERIFIED, Gatekeeper

NOW = 1_700_000_000.0


def _key(name: str) -> OperatorKey:
    return OperatorKey(SigningKey.from_raw(name, bytes([len(name)]) * 32))


ALICE, BOB, ROOT = _key("alice"), _key("bob"), _key("root")


def _entry(key: OperatorKey, *roles: str) -> str:
    return f'[operators.{key.name}]\nroles = {list(roles)!r}\nkey = "{key.verifier}"\n'.replace("'", '"')


ROSTER_TEXT = _entry(ALICE, "approver") + _entry(BOB, "operator", "viewer") + _entry(ROOT, "admin")


def _admit(data, *, action="halt", targets=("clerk",), now=NOW, guard=None, roster=None):
    return authorize(roster or Roster.parse(ROSTER_TEXT), data, action=action, targets=targets, now=now,
                     guard=guard or ReplayGuard())


def _refused(exc_type, check, data, **kw):
    with pytest.raises(exc_type) as info:
        _admit(data, **kw)
    assert info.value.check == check, info.value
    assert isinstance(info.value, GarrisonError)
    return info.value


def test_the_roles_grant_what_the_issue_names_and_admin_everything():
    assert "approve" in GRANTS[Role.APPROVER] and "halt" not in GRANTS[Role.APPROVER]
    assert "halt" in GRANTS[Role.OPERATOR] and "approve" not in GRANTS[Role.OPERATOR]
    assert GRANTS[Role.VIEWER] == {"annotate"}
    assert GRANTS[Role.ADMIN] == ACTIONS >= {"deploy", "rollback", "approve", "halt", "quarantine"}
    assert all(g <= ACTIONS for g in GRANTS.values())


def test_a_signed_call_by_a_listed_operator_with_the_role_is_admitted_with_its_key_id():
    me = _admit(BOB.sign("halt", "clerk", now=NOW).to_dict())
    assert me.name == "bob" and me.auth == f"ed25519:{BOB.verifier.key_id.hex()}"
    assert _admit(ROOT.sign("rollback", "clerk", now=NOW).to_dict(), action="rollback").name == "root"


def test_each_check_refuses_what_it_guards_by_name():
    ok = BOB.sign("halt", "clerk", now=NOW).to_dict()
    _refused(Unauthenticated, "malformed", "bob")
    _refused(Unauthenticated, "malformed", {**ok, "at": float("nan")})
    _refused(Unauthenticated, "malformed", {k: v for k, v in ok.items() if k != "signature"})
    _refused(Unauthenticated, "unknown", _key("mallory").sign("halt", "clerk", now=NOW).to_dict())
    # Signed by another key than the one the file lists for the name it claims.
    forged = OperatorKey(SigningKey.from_raw("bob", b"\x99" * 32)).sign("halt", "clerk", now=NOW).to_dict()
    _refused(Unauthenticated, "signature", forged)
    _refused(Unauthenticated, "signature", {**ok, "why": "x", "target": "other"})  # changed after signing
    _refused(Unauthenticated, "action", ok, action="unhalt")
    _refused(Unauthenticated, "target", ok, targets=("other",))
    _refused(Unauthenticated, "stale", ok, now=NOW + 301)
    _refused(Unauthenticated, "stale", ok, now=NOW - 301)
    guard = ReplayGuard()
    _admit(ok, guard=guard)
    _refused(Unauthenticated, "replayed", ok, guard=guard)
    denied = _refused(Forbidden, "role", ALICE.sign("halt", "clerk", now=NOW).to_dict())
    assert "alice (approver) may not halt" in str(denied)


def test_an_approver_approves_and_an_operator_cannot():
    assert _admit(ALICE.sign("approve", "q/1", now=NOW).to_dict(), action="approve", targets=("q/1",)).name == "alice"
    _refused(Forbidden, "role", BOB.sign("approve", "q/1", now=NOW).to_dict(), action="approve", targets=("q/1",))
    # An approval signed for one request does not approve another.
    _refused(Unauthenticated, "target", ALICE.sign("approve", "q/1", now=NOW).to_dict(), action="approve",
             targets=("q/2",))


def test_the_replay_guard_forgets_nonces_only_once_they_cannot_pass_the_window_again():
    guard = ReplayGuard(window=10)
    assert guard.admit("n0", 0) and not guard.admit("n0", 5)
    for i in range(1100):
        guard.admit(f"x{i}", 100)
    assert not guard.admit("x5", 100), "still within the window: remembered"
    assert guard.admit("n0", 100), "forgotten after 2 windows (a credential that old is stale anyway)"


@pytest.mark.parametrize("text, says", [
    ("not toml [", "not TOML"),
    ("[other]\nx = 1\n", "no [operators.<name>]"),
    ('[operators.alice]\nroles = ["root"]\nkey = "x"\n', "'root' is not a valid Role"),
    ('[operators.alice]\nroles = []\nkey = "x"\n', "non-empty list"),
    ('[operators.alice]\nroles = ["viewer"]\nkey = "nonsense"\n', "operators.alice.key"),
    (_entry(BOB, "viewer").replace("operators.bob", "operators.alice"), "named 'bob'"),
    (_entry(ALICE, "viewer") + "pasword = 'x'\n", "unknown fields ['pasword']"),
])
def test_a_bad_operators_file_says_what_is_wrong(text, says):
    with pytest.raises(OperatorsFileError, match=None) as info:
        Roster.parse(text)
    assert says in str(info.value)


def test_without_an_operators_file_a_name_is_admitted_unverified():
    gate = Gatekeeper(None, ("clerk",))
    assert not gate.enforcing
    assert (gate.admit("halt", " dave ").name, gate.admit("halt", "dave").auth) == ("dave", UNVERIFIED)
    assert gate.admit("halt", BOB.sign("halt", "clerk", now=NOW).to_dict()).auth == UNVERIFIED
    with pytest.raises(Unauthenticated):
        gate.admit("halt", "  ")


def test_with_an_operators_file_a_bare_name_is_refused_and_says_how_to_sign(tmp_path):
    path = tmp_path / "operators.toml"
    path.write_text(ROSTER_TEXT)
    gate = Gatekeeper(path, ("clerk",), clock=lambda: NOW)
    with pytest.raises(Unauthenticated) as info:
        gate.admit("halt", "bob")
    assert info.value.check == "malformed" and "OperatorKey.load" in str(info.value) and "--key" in str(info.value)
    assert gate.admit("halt", BOB.sign("halt", "clerk", now=NOW).to_dict()).name == "bob"
    # A narrower target: what an approval queue asks for one request.
    assert gate.admit("approve", ALICE.sign("approve", "clerk/r1", now=NOW).to_dict(), on="clerk/r1").name == "alice"


def test_the_file_is_read_again_when_it_changes_and_a_broken_one_refuses_everything(tmp_path):
    path = tmp_path / "operators.toml"
    path.write_text(_entry(ROOT, "admin"))
    gate = Gatekeeper(path, ("clerk",), clock=lambda: NOW)
    with pytest.raises(Unauthenticated) as info:
        gate.admit("halt", BOB.sign("halt", "clerk", now=NOW).to_dict())
    assert info.value.check == "unknown"
    path.write_text(ROSTER_TEXT)  # bob added: admitted on the next call, no restart
    os.utime(path, ns=(1, 1))
    assert gate.admit("halt", BOB.sign("halt", "clerk", now=NOW).to_dict()).name == "bob"
    path.write_text("[operators.bob\n")  # broken: fail closed
    with pytest.raises(OperatorsFileError):
        gate.admit("halt", BOB.sign("halt", "clerk", now=NOW).to_dict())
    path.unlink()
    with pytest.raises(OperatorsFileError, match="cannot read"):
        gate.admit("halt", BOB.sign("halt", "clerk", now=NOW).to_dict())
