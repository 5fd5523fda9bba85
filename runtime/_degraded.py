"""The degraded state: the checkpoint store refuses the background work, and how it is retried.

Under ASYNC durability a message is acknowledged once it is committed to the
agent's local LMDB; shipping the journal and taking checkpoints happen later,
on the background thread (``_background``).  When the checkpoint store fails
underneath that work (the disk is full, the mount turned read-only, a quota
or a permission), the agent goes on accepting messages, but what it accepts
lives on this node only, and the local journal cannot be trimmed (trimming
needs checkpoints), so the local LMDB grows.  That is the *degraded* state:

* It begins with the first failure of the background work (an *episode*:
  ``since`` is its wall time) and records what failed: a reason derived from
  the error (:func:`reason_of`), the error's type, errno and path, how many
  attempts failed and the last error.
* While degraded, the work is retried after :func:`retry_backoff`: exponential
  in the attempts, with jitter, capped (the runtime's one ``Backoff``); not every
  ``ship_interval`` as when healthy.
* It ends (``cleared_at``) when the background work succeeds again: a
  shipment and, if one was due, a checkpoint.  The last ended episode is kept
  for operators.

Owner: the agent's background work (``_background``); the operations that
take a final checkpoint (stop, halt, quarantine) record their failures here
too.  Nothing is lost while degraded: everything acknowledged is in the
local LMDB and is shipped once the store takes writes again.
"""

from __future__ import annotations

import errno as errno_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._backoff import Backoff
from .exceptions import CheckpointError

__all__ = ["DegradedEpisode", "DegradedState", "reason_of", "retry_backoff"]

#: Reasons by errno (the rest of the store's errors are ``store_error``).
_REASONS = {
    errno_mod.ENOSPC: "store_full",
    errno_mod.EDQUOT: "store_full",
    errno_mod.EROFS: "store_read_only",
    errno_mod.EACCES: "store_permission_denied",
    errno_mod.EPERM: "store_permission_denied",
}


def reason_of(exc: BaseException) -> str:
    """A short reason for an operator: ``store_full``, ``store_read_only``,
    ``store_permission_denied``, ``store_error`` (another checkpoint store error)
    or ``background_error`` (anything else: a bug to report)."""
    if isinstance(exc, CheckpointError):
        return _REASONS.get(exc.errno, "store_error") if exc.errno is not None else "store_error"
    return "background_error"


def retry_backoff(ship_interval: float, checkpoint_interval: float) -> Backoff:
    """When failing background work is tried again: the runtime's one retry policy (``_backoff``).

    Retry ``n`` (counting from 0) waits ``min(checkpoint_interval, ship_interval * 2 ** n)``,
    up to half of it taken off at random so agents sharing a store do not retry in step:
    it starts at the shipping cadence and never waits longer than a checkpoint interval.
    """
    return Backoff(initial=ship_interval, factor=2.0, cap=max(ship_interval, checkpoint_interval), jitter=0.5)


class DegradedEpisode(BaseModel):
    """One spell of failing background work (see module docstring); JSON-friendly."""

    model_config = ConfigDict(frozen=True)

    #: ``store_full``, ``store_read_only``, ``store_permission_denied``, ``store_error``, ``background_error``.
    reason: str
    #: The class name of the first error of the episode.
    error_type: str
    #: The OS error number of the first error (None: not an OS error), and its name (``ENOSPC``).
    errno: int | None = None
    errno_name: str | None = None
    #: The file or directory it failed on, when known.
    path: str | None = None
    #: Wall time of the first failure.
    since: float
    #: Failed attempts so far (the first one included).
    attempts: int = 1
    #: The most recent error, as ``Type: text``, and its wall time.
    last_error: str
    last_attempt: float
    #: Where the most recent failure happened (``background``, ``checkpoint``, ``stop``, ``halt``...).
    where: str = "background"
    #: Wall time it cleared (a checkpoint succeeded again); None while it lasts.
    cleared_at: float | None = None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"


class DegradedState:
    """The agent's current episode (None when healthy) and the last one that cleared; thread-safe.

    ``on_change(degraded: bool)`` is told every transition (the metrics gauge).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self.current: DegradedEpisode | None = None
        self.last_cleared: DegradedEpisode | None = None

    @property
    def active(self) -> bool:
        return self.current is not None

    def failed(self, exc: BaseException, where: str = "background") -> DegradedEpisode:
        """Record one failed attempt: a new episode, or one more attempt of the current one."""
        now = self._clock()
        with self._lock:
            current = self.current
            if current is None:
                err = exc.errno if isinstance(exc, CheckpointError) else getattr(exc, "errno", None)
                err = err if isinstance(err, int) else None
                path = exc.path if isinstance(exc, CheckpointError) else getattr(exc, "filename", None)
                current = DegradedEpisode(
                    reason=reason_of(exc), error_type=type(exc).__name__, errno=err,
                    errno_name=errno_mod.errorcode.get(err) if err is not None else None,
                    path=str(path) if path is not None else None, since=now,
                    last_error=_describe(exc), last_attempt=now, where=where)
                began = True
            else:
                current = current.model_copy(update={
                    "attempts": current.attempts + 1, "last_error": _describe(exc), "last_attempt": now,
                    "where": where})
                began = False
            self.current = current
        if began and self._on_change is not None:
            self._on_change(True)
        return current

    def recovered(self) -> DegradedEpisode | None:
        """The background work succeeded: end the current episode (if any) and return it."""
        with self._lock:
            current = self.current
            if current is None:
                return None
            self.last_cleared = current.model_copy(update={"cleared_at": self._clock()})
            self.current = None
        if self._on_change is not None:
            self._on_change(False)
        return self.last_cleared

    def status(self) -> dict[str, Any]:
        """``degraded`` (the current episode or None) and ``degraded_cleared`` (the last that ended)."""
        current, cleared = self.current, self.last_cleared
        return {
            "degraded": current.model_dump(mode="json") if current is not None else None,
            "degraded_cleared": cleared.model_dump(mode="json") if cleared is not None else None,
        }

    def probe(self) -> dict[str, Any] | None:
        """The part a liveness probe carries: enough for a supervisor to act once per episode."""
        current = self.current
        if current is None:
            return None
        return {"since": current.since, "reason": current.reason, "attempts": current.attempts,
                "errno": current.errno_name, "path": current.path, "last_error": current.last_error}
