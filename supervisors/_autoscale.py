"""How big a worker pool should be: a policy as data and one pure function of what the queue shows.

The source article's rule for horizontal scaling: size on the work queue's
depth combined with latency targets, not on CPU.  :func:`decide` takes the
:class:`ScalePolicy`, one :class:`Observation` (the queue's depth, how long
its oldest pending item has waited, the pool's size, the time) and the
scaler's :class:`Memory` (when it last changed the size, since when the queue
has looked idle), and returns the :class:`Decision` (the new size and why, in
words) with the memory to keep.  No clock is read here: tests inject time.

The rules, in order:

- **Wanted size**: enough workers for the backlog (``ceil(depth /
  items_per_worker)``), and one more than now while the oldest pending item
  has waited past ``target_wait``; clamped to ``[min_size, max_size]``.
- **Up** when the wanted size is above the current one and ``up_cooldown``
  has passed since the last change: by at most ``max_step``.
- **Down** only when the wanted size is below, the queue has looked quiet
  (its oldest pending item under half the target) for ``quiet_for`` seconds
  without a break, and ``down_cooldown`` has passed: one worker at a time.
- Otherwise **hold**, saying which of these stopped it.

No flapping by construction: a change starts a cooldown, a shrink needs a
quiet stretch that any busy look resets, and a shrink goes one step at a
time while a growth may go several (waiting work costs more than an idle
worker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["Decision", "Memory", "Observation", "ScalePolicy", "decide"]


@dataclass(frozen=True)
class ScalePolicy:
    """The pool's bounds and targets (seconds where a time)."""

    min_size: int = 1
    max_size: int = 8
    #: The longest an item should wait for a worker: past it, the pool grows.
    target_wait: float = 5.0
    #: The backlog one worker is expected to absorb.
    items_per_worker: int = 50
    #: How many workers one growth may add.
    max_step: int = 4
    up_cooldown: float = 10.0
    down_cooldown: float = 60.0
    #: How long the queue must look quiet before the pool shrinks.
    quiet_for: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1, not {self.min_size}, {self.max_size}")
        if self.items_per_worker < 1 or self.max_step < 1:
            raise ValueError("items_per_worker and max_step must be at least 1")
        if min(self.target_wait, self.up_cooldown, self.down_cooldown, self.quiet_for) < 0:
            raise ValueError("times must not be negative")


@dataclass(frozen=True)
class Observation:
    """One look at the queue and the pool."""

    now: float
    size: int
    #: Pending plus leased items.
    depth: int
    #: Seconds the oldest pending item has waited (None: nothing pending).
    oldest_wait: float | None = None


@dataclass(frozen=True)
class Memory:
    """What the scaler remembers between looks."""

    last_change: float | None = None
    quiet_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """The pool's size after this look, whether it changed, and why."""

    size: int
    changed: bool
    reason: str


def decide(policy: ScalePolicy, obs: Observation, memory: Memory) -> tuple[Decision, Memory]:
    """The decision for ``obs`` under ``policy``, and the memory to pass to the next call."""
    waited = obs.oldest_wait or 0.0
    behind = waited > policy.target_wait
    quiet = waited < policy.target_wait / 2
    memory = replace(memory, quiet_since=(memory.quiet_since if memory.quiet_since is not None else obs.now)
                     if quiet else None)
    want = math.ceil(obs.depth / policy.items_per_worker)
    if behind:
        want = max(want, obs.size + 1)
    want = min(max(want, policy.min_size), policy.max_size)
    why = f"depth {obs.depth} ({policy.items_per_worker} a worker), oldest pending waited {waited:.1f} s " \
          f"(target {policy.target_wait:g} s)"
    since = math.inf if memory.last_change is None else obs.now - memory.last_change
    if want > obs.size:
        if since < policy.up_cooldown:
            return Decision(obs.size, False, f"hold at {obs.size}: would grow to {want}, but the last change "
                                             f"was {since:.1f} s ago (up cooldown {policy.up_cooldown:g} s); "
                                             f"{why}"), memory
        size = min(want, obs.size + policy.max_step)
        return Decision(size, True, f"grow {obs.size} -> {size}: {why}"), replace(memory, last_change=obs.now)
    if want < obs.size:
        quiet_for = 0.0 if memory.quiet_since is None else obs.now - memory.quiet_since
        if quiet_for < policy.quiet_for:
            return Decision(obs.size, False, f"hold at {obs.size}: could shrink to {want}, but quiet for only "
                                             f"{quiet_for:.1f} s (needs {policy.quiet_for:g} s); {why}"), memory
        if since < policy.down_cooldown:
            return Decision(obs.size, False, f"hold at {obs.size}: could shrink to {want}, but the last change "
                                             f"was {since:.1f} s ago (down cooldown {policy.down_cooldown:g} s)"), memory
        size = obs.size - 1
        return Decision(size, True, f"shrink {obs.size} -> {size}: quiet for {quiet_for:.1f} s; {why}"), \
            replace(memory, last_change=obs.now)
    return Decision(obs.size, False, f"hold at {obs.size}: {why}"), memory
