"""Restart intensity: more than N restarts within T seconds and the supervisor gives up.

A faithful copy of ``add_restart/1,3`` in OTP's ``supervisor.erl``: the
supervisor keeps the times of its recent restarts (across all its children);
each new restart drops the times older than ``now - period`` and adds ``now``;
if more than ``intensity`` remain, the supervisor must terminate.

Pure: the caller passes ``now`` (a monotonic clock reading), so a test drives
it with a fake clock.
"""

from __future__ import annotations

__all__ = ["add_restart"]


def add_restart(
    restarts: tuple[float, ...], now: float, period: float, intensity: int
) -> tuple[bool, tuple[float, ...]]:
    """Record a restart at ``now``: ``(within_intensity, restarts')``.

    ``restarts`` is newest first, as OTP keeps it.  Invariant: ``restarts'``
    holds only times in ``[now - period, now]`` (the window is closed at both
    ends, as in OTP), so it never grows past ``intensity + 1`` entries.
    ``within_intensity`` is False on the ``intensity + 1``-th restart inside
    one window: the caller must stop its children and escalate.
    """
    threshold = now - period
    kept = tuple(t for t in restarts if t >= threshold)
    updated = (now, *kept)
    return len(updated) <= intensity, updated
