"""The pool's sizing policy: pure, on an injected clock (no Ray, no sleeps)."""

from __future__ import annotations

import itertools

import pytest

from supervisors._autoscale import Memory, Observation, ScalePolicy, decide

POLICY = ScalePolicy(min_size=1, max_size=6, target_wait=2.0, items_per_worker=10, max_step=2,
                     up_cooldown=5.0, down_cooldown=20.0, quiet_for=10.0)


def run(load: list[tuple[int, float | None]], start_size: int = 1, every: float = 1.0, policy: ScalePolicy = POLICY):
    """Feed one look a second; the sizes after each look and the decisions."""
    size, memory, sizes, decisions = start_size, Memory(), [], []
    for i, (depth, waited) in enumerate(load):
        decision, memory = decide(policy, Observation(now=i * every, size=size, depth=depth, oldest_wait=waited),
                                  memory)
        size = decision.size
        sizes.append(size)
        decisions.append(decision)
    return sizes, decisions


def test_a_load_step_grows_the_pool_by_steps_within_the_cooldown_and_the_max():
    sizes, decisions = run([(100, 3.0)] * 12)
    assert sizes[0] == 3, "the first look grows by max_step at once"
    assert sizes[:5] == [3, 3, 3, 3, 3], "then waits out the up cooldown"
    assert sizes[5] == 5 and sizes[10] == 6 and max(sizes) == POLICY.max_size
    assert decisions[0].changed and decisions[0].reason.startswith("grow 1 -> 3: depth 100")
    assert "up cooldown" in decisions[1].reason


def test_the_pool_shrinks_one_at_a_time_only_after_a_quiet_stretch():
    sizes, decisions = run([(0, None)] * 60, start_size=4)
    first_shrink = sizes.index(3)
    assert first_shrink == POLICY.quiet_for, "quiet for quiet_for seconds first"
    assert sizes[first_shrink + 1: first_shrink + 20] == [3] * 19, "then the down cooldown"
    assert sizes[-1] == 1 and all(a - b in (0, 1) for a, b in itertools.pairwise(sizes)), "one at a time"
    assert "quiet for only" in decisions[3].reason


def test_a_busy_look_resets_the_quiet_stretch():
    load = [(0, None)] * 8 + [(5, 1.5)] + [(0, None)] * 9
    sizes, _ = run(load, start_size=3)
    assert sizes == [3] * len(load), "1.5 s of waiting is not quiet (under half the target is): no shrink yet"


def test_an_oscillating_load_does_not_flap():
    load = [(80, 4.0) if (i // 3) % 2 else (0, None) for i in range(120)]
    sizes, decisions = run(load)
    changes = sum(d.changed for d in decisions)
    downs = sum(1 for a, b in itertools.pairwise(sizes) if b < a)
    assert downs == 0, "a load back every 3 s never leaves a quiet stretch of 10 s"
    assert changes <= 1 + (120 // POLICY.up_cooldown), changes


def test_bounds_hold():
    assert run([(10_000, 100.0)] * 30)[0][-1] == POLICY.max_size
    assert run([(0, None)] * 200, start_size=6)[0][-1] == POLICY.min_size
    assert run([(0, None)], start_size=0)[0] == [1], "below min grows at once"
    with pytest.raises(ValueError):
        ScalePolicy(min_size=3, max_size=2)
