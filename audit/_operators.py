"""Operators as identities: the operators file, roles, and signed operator calls.

An *operators file* (TOML) names each person who may act on a Garrison
deployment, their roles, and the Ed25519 key their calls are signed with
(the key's vkey line, as ``garrison operators keygen`` prints it)::

    [operators.alice]
    roles = ["approver"]
    key = "alice+1a2b3c4d+AXyz..."

    [operators.bob]
    roles = ["operator", "viewer"]
    key = "bob+5e6f7a8b+AQrs..."

A role is a set of operator actions (:data:`GRANTS`, policy as data):
``viewer`` may annotate decisions; ``operator`` pulls and lifts kill
switches and quarantines, reviews flagged actions and resets breakers;
``approver`` approves and denies; ``admin`` may do every action, deploy and
rollback included.  Reading (status, logs, decisions) needs no role.

An operator's call carries a :class:`Credential`: who, the action, the
target (an agent's or a supervisor's id), a time and a random nonce, signed
with the operator's key over :func:`statement`.  :func:`authorize` admits it
only if every check passes, in this order, and otherwise raises
:class:`~audit.Unauthenticated` or :class:`~audit.Forbidden` naming the
check that refused it (``check``):

``malformed``  not a credential at all
``unknown``    the name is not in the operators file
``signature``  not signed by that operator's key
``action``     signed for another action
``target``     signed for another agent or supervisor
``stale``      signed more than ``window`` seconds away from now
``replayed``   this nonce was already admitted (within the window)
``role``       authenticated, but no role of theirs grants the action (Forbidden)

Invariants: a credential is admitted at most once per :class:`ReplayGuard`
(a verifier remembers every nonce it admitted for ``2 * window`` seconds,
and refuses anything older than ``window``); nothing is admitted without a
valid signature by the key the operators file lists for the name it claims.
No clock is read here: ``now`` is passed in.
"""

from __future__ import annotations

import base64
import enum
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols import canonical_bytes

from ._keys import SigningKey, VerifierKey, read_signing_key, strict_b64decode
from .exceptions import Forbidden, KeyFileError, OperatorsFileError, Unauthenticated

__all__ = ["ACTIONS", "GRANTS", "Credential", "Identity", "Operator", "OperatorKey", "ReplayGuard", "Role",
           "Roster", "authorize", "statement"]

#: What the signature covers, before the canonical encoding of the call: a credential for
#: anything else (an audit checkpoint, another protocol) never verifies as one of these.
DOMAIN = b"garrison operator call v1\n"

#: How far a credential's time may be from the verifier's clock (seconds), either way.
WINDOW = 300.0


class Role(enum.Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


#: Every operator action Garrison checks.
ACTIONS: frozenset[str] = frozenset({
    "annotate", "halt", "unhalt", "quarantine", "release", "review", "reset_breaker",
    "approve", "deny", "deploy", "rollback",
})

#: What each role may do.  Roles add up: an operator who is also an approver may do both.
GRANTS: Mapping[Role, frozenset[str]] = {
    Role.VIEWER: frozenset({"annotate"}),
    Role.OPERATOR: frozenset({"annotate", "halt", "unhalt", "quarantine", "release", "review", "reset_breaker"}),
    Role.APPROVER: frozenset({"annotate", "approve", "deny"}),
    Role.ADMIN: ACTIONS,
}


def may(roles: Iterable[Role], action: str) -> bool:
    """Whether any of ``roles`` grants ``action``."""
    return any(action in GRANTS[r] for r in roles)


@dataclass(frozen=True)
class Operator:
    """One person: their name, roles and the key their calls are signed with."""

    name: str
    roles: frozenset[Role]
    key: VerifierKey


@dataclass(frozen=True)
class Identity:
    """Who an admitted call came from: the operator's name and their key's id (``ed25519:<hex>``)."""

    name: str
    auth: str


@dataclass(frozen=True)
class Roster:
    """The operators file, parsed: name -> :class:`Operator`."""

    operators: Mapping[str, Operator] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, *, source: str = "operators file") -> Roster:
        """The roster ``text`` (TOML) describes; :class:`~audit.OperatorsFileError` saying what is wrong."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise OperatorsFileError(f"{source}: not TOML: {exc}") from exc
        table = doc.get("operators")
        if not isinstance(table, dict) or not table:
            raise OperatorsFileError(f"{source}: no [operators.<name>] tables")
        operators = {}
        for name, entry in table.items():
            if not isinstance(entry, dict):
                raise OperatorsFileError(f"{source}: operators.{name} is not a table")
            unknown = set(entry) - {"roles", "key"}
            if unknown:
                raise OperatorsFileError(f"{source}: operators.{name}: unknown fields {sorted(unknown)}")
            roles = entry.get("roles")
            if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
                raise OperatorsFileError(f"{source}: operators.{name}.roles is a non-empty list of "
                                         f"{[r.value for r in Role]}")
            try:
                parsed = frozenset(Role(r) for r in roles)
            except ValueError as exc:
                raise OperatorsFileError(f"{source}: operators.{name}: {exc}; roles are "
                                         f"{[r.value for r in Role]}") from exc
            try:
                key = VerifierKey.parse(str(entry.get("key", "")))
            except KeyFileError as exc:
                raise OperatorsFileError(f"{source}: operators.{name}.key: {exc}") from exc
            if key.name != name:
                raise OperatorsFileError(f"{source}: operators.{name}.key is named {key.name!r}; an operator's "
                                         "key carries the operator's name")
            operators[name] = Operator(name, parsed, key)
        return cls(operators)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Roster:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OperatorsFileError(f"cannot read operators file {path}: {exc}") from exc
        return cls.parse(text, source=str(path))


def statement(who: str, action: str, target: str, at: float, nonce: str) -> bytes:
    """The bytes an operator signs for one call."""
    return DOMAIN + canonical_bytes({"who": who, "action": action, "target": target, "at": at, "nonce": nonce})


@dataclass(frozen=True)
class Credential:
    """One signed operator call (travels as :meth:`to_dict`, plain data)."""

    who: str
    action: str
    target: str
    at: float
    nonce: str
    signature: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (it travels inside messages too): the signature in base64."""
        return {"who": self.who, "action": self.action, "target": self.target, "at": self.at,
                "nonce": self.nonce, "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Any) -> Credential:
        """The credential ``data`` holds; :class:`~audit.Unauthenticated` (``malformed``) if it is not one."""
        try:
            cred = cls(who=data["who"], action=data["action"], target=data["target"], at=data["at"],
                       nonce=data["nonce"], signature=strict_b64decode(data["signature"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Unauthenticated(f"not an operator credential: {exc}", check="malformed") from exc
        strings = (cred.who, cred.action, cred.target, cred.nonce)
        if not all(isinstance(s, str) and s for s in strings) \
                or isinstance(cred.at, bool) or not isinstance(cred.at, int | float) or not math.isfinite(cred.at):
            raise Unauthenticated("not an operator credential: who, action, target and nonce are non-empty "
                                  "strings, at a finite time", check="malformed")
        return cred


class OperatorKey:
    """An operator's signing key: what their CLI or script signs calls with.

    ``OperatorKey.load("alice.key", "alice")`` reads the key ``garrison
    operators keygen alice`` wrote; pass it wherever an operator's call takes
    ``who``.
    """

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str) -> OperatorKey:
        return cls(read_signing_key(path, name))

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def verifier(self) -> VerifierKey:
        return self._key.verifier

    def sign(self, action: str, target: str, *, now: float, nonce: str | None = None) -> Credential:
        """A credential for ``action`` on ``target``, signed at ``now``."""
        nonce = nonce if nonce is not None else os.urandom(16).hex()
        sig = self._key.sign(statement(self.name, action, target, now, nonce))
        return Credential(self.name, action, target, now, nonce, sig)

    def __repr__(self) -> str:
        return f"OperatorKey({self.name!r})"


class ReplayGuard:
    """The nonces a verifier admitted, each kept until no credential of its time could pass again."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def admit(self, nonce: str, now: float) -> bool:
        """Remember ``nonce``; False if it was admitted before."""
        if len(self._seen) > 1024:
            horizon = now - 2 * self.window
            self._seen = {n: t for n, t in self._seen.items() if t >= horizon}
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def authorize(roster: Roster, data: Any, *, action: str, targets: Iterable[str], now: float,
              guard: ReplayGuard) -> Identity:
    """Who signed ``data`` for ``action`` on one of ``targets``, if they may do it (module docstring)."""
    cred = Credential.from_dict(data)
    operator = roster.operators.get(cred.who)
    if operator is None:
        raise Unauthenticated(f"{cred.who!r} is not in the operators file", check="unknown")
    if not operator.key.verify(statement(cred.who, cred.action, cred.target, cred.at, cred.nonce), cred.signature):
        raise Unauthenticated(f"the credential is not signed by {cred.who}'s key", check="signature")
    if cred.action != action:
        raise Unauthenticated(f"the credential was signed for {cred.action!r}, not {action!r}", check="action")
    targets = tuple(targets)
    if cred.target not in targets:
        raise Unauthenticated(f"the credential was signed for {cred.target!r}, not {' or '.join(targets)}",
                              check="target")
    if abs(now - cred.at) > guard.window:
        raise Unauthenticated(f"the credential was signed {now - cred.at:+.0f}s from now; at most "
                              f"{guard.window:.0f}s either way (check the clocks)", check="stale")
    if not guard.admit(cred.nonce, now):
        raise Unauthenticated("the credential was used before", check="replayed")
    if not may(operator.roles, action):
        roles = ", ".join(sorted(r.value for r in operator.roles))
        raise Forbidden(f"{cred.who} ({roles}) may not {action}", check="role", who=cred.who)
    return Identity(cred.who, f"ed25519:{operator.key.key_id.hex()}")
