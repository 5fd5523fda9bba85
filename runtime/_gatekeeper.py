"""Admitting operators' calls: who is acting, checked against the operators file.

One :class:`Gatekeeper` per agent host, supervisor or approval queue; it
owns that component's view of the operators file (``AgentConfig.operators``
or ``SupervisorSpec.operators``, a path every node can read, like the
checkpoint directory) and its replay guard.

- With an operators file, every operator call must carry a credential
  signed by an operator listed there whose roles grant the action
  (:func:`audit.authorize`); anything else is refused with
  :class:`~audit.Unauthenticated` or :class:`~audit.Forbidden`, before any
  work.  The admitted identity is recorded as ``who`` (the operator's name)
  and ``auth`` (``ed25519:<key id>``).
- Without one (the default, and the demo), ``who`` is free text, recorded
  with ``auth`` ``unverified``.

The file is read when first needed and again whenever its size or
modification time changes, so adding or removing an operator takes effect
on the next call without a restart.  A file that cannot be read or parsed
refuses every call (fail closed) with :class:`~audit.OperatorsFileError`.

Invariants: nothing is admitted but through :meth:`Gatekeeper.admit`; a
credential is admitted at most once per gatekeeper (its nonce).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from audit import Identity, OperatorKey, ReplayGuard, Roster, Unauthenticated, authorize
from audit._operators import WINDOW

__all__ = ["RUNTIME", "UNVERIFIED", "Gatekeeper", "credential_for"]

#: ``auth`` of an identity nobody checked: free text, in a deployment without an operators file.
UNVERIFIED = "unverified"
#: ``auth`` of an action the runtime took itself (a supervisor's policy, a drift breaker).
RUNTIME = "runtime"


def credential_for(who: Any, action: str, target: str, clock: Callable[[], float] = time.time) -> Any:
    """What a client sends as ``who``: a signed credential for an :class:`~audit.OperatorKey`, else ``who``."""
    if isinstance(who, OperatorKey):
        return who.sign(action, target, now=clock()).to_dict()
    return who


class Gatekeeper:
    """Admits operators' calls on ``targets`` (this component's ids) (see module docstring)."""

    def __init__(self, path: str | os.PathLike[str] | None, targets: Iterable[str], *,
                 clock: Callable[[], float] = time.time, window: float = WINDOW) -> None:
        self.path = None if path is None else os.fspath(path)
        self.targets = tuple(targets)
        self._clock = clock
        self._guard = ReplayGuard(window)
        self._lock = threading.Lock()
        self._roster: Roster | None = None
        self._seen: tuple[int, int] | None = None

    @property
    def enforcing(self) -> bool:
        return self.path is not None

    def admit(self, action: str, who: Any, *, on: str | None = None) -> Identity:
        """The identity ``who`` proves for ``action``, or a typed refusal.

        ``on``: what the credential must have been signed for, when narrower than this
        component (an approval queue's ``<queue>/<request id>``); default: ``targets``.
        """
        if self.path is None:
            name = who.get("who") if isinstance(who, dict) else who
            if not isinstance(name, str) or not name.strip():
                raise Unauthenticated(f"an operator is named by a non-empty string, got {name!r}", check="malformed")
            return Identity(name.strip(), UNVERIFIED)
        if isinstance(who, str):
            raise Unauthenticated(f"{who!r} is a name, not a credential: this deployment checks operators against "
                                  f"{self.path}; sign the call with your key (OperatorKey.load(path, name) as who, "
                                  "or --key in the CLI)", check="malformed")
        with self._lock:
            return authorize(self._current(), who, action=action, targets=(on,) if on else self.targets,
                             now=self._clock(), guard=self._guard)

    def _current(self) -> Roster:
        """The roster as the file says now (re-read when its size or mtime changed)."""
        assert self.path is not None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None  # Roster.read raises the typed error
        if self._roster is None or stamp is None or stamp != self._seen:
            self._roster = None
            self._roster = Roster.read(self.path)
            self._seen = stamp
        return self._roster
