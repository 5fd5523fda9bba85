"""Delay between a child's failure and its restart: exponential, jittered, reset when stable.

Pure functions of a policy, a count, a clock reading and a random number, so
tests pass both and sleep never.  The delay itself is the runtime's one
backoff formula (``runtime._backoff.Backoff``); this module adds what only a
supervisor needs: a validated, serialisable policy (part of a supervisor's
spec, so a pydantic model with a ``reset_after``) and the count of
consecutive failures that resets once a child was stable.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from runtime._backoff import Backoff

from ._frozen import Frozen

__all__ = ["BackoffPolicy", "consecutive_failures", "restart_delay"]


class BackoffPolicy(Frozen):
    """How long to wait before the k-th consecutive restart of one child.

    ``delay(k) = min(max_delay, initial * factor ** (k - 1)) * (1 - jitter * r)``
    with ``r`` uniform in ``[0, 1)``: ``jitter=0`` is deterministic, ``jitter=1``
    is "full jitter".  The first restart of a child that had been stable for
    ``reset_after`` seconds counts as k = 1 again.
    """

    #: Seconds before the first restart (OTP restarts at once: use 0 for that).
    initial: float = Field(0.05, ge=0)
    factor: float = Field(2.0, ge=1)
    max_delay: float = Field(5.0, ge=0)
    #: Fraction of the delay randomly taken off, spreading restarts of many children.
    jitter: float = Field(0.5, ge=0, le=1)
    #: Seconds of running without failure after which the failure count resets.
    reset_after: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BackoffPolicy:
        if self.max_delay < self.initial:
            raise ValueError("max_delay must not be less than initial")
        return self


def restart_delay(policy: BackoffPolicy, consecutive: int, rand: float) -> float:
    """Seconds to wait before restart number ``consecutive`` (>= 1); ``rand`` in [0, 1)."""
    if consecutive < 1:
        raise ValueError("consecutive counts the failure being handled: it is at least 1")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    return Backoff(policy.initial, policy.factor, policy.max_delay, policy.jitter).delay(consecutive - 1, rand)


def consecutive_failures(policy: BackoffPolicy, previous: int, started_at: float | None, now: float) -> int:
    """The failure count including the one at ``now``.

    ``started_at`` is when the failed incarnation started (None if it never
    did); having run ``reset_after`` seconds or more means it was stable, so
    this failure is the first of a new series.
    """
    if started_at is not None and now - started_at >= policy.reset_after:
        return 1
    return previous + 1
