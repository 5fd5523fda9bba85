"""The runtime's one retry-delay policy (``runtime._backoff``): pure, driven with injected random numbers."""

from __future__ import annotations

import random

import pytest

from runtime._backoff import Backoff
from runtime._config import AgentConfig
from runtime._holding import RetrySchedule
from runtime._outbox import retry_policy


def test_without_jitter_the_delay_doubles_up_to_its_cap_and_ignores_rand():
    policy = Backoff(initial=0.01, factor=2.0, cap=0.4)
    assert [policy.delay(a) for a in range(8)] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.4, 0.4])
    assert policy.delay(3, 0.99) == policy.delay(3, 0.0)
    assert policy.delay(1_000_000) == 0.4, "a long retry loop neither overflows nor exceeds the cap"


def test_full_jitter_spreads_delays_over_zero_to_the_base_reproducibly():
    policy = Backoff(initial=1.0, factor=2.0, cap=3.0, jitter=1.0)
    rng1, rng2 = random.Random(11), random.Random(11)
    a = [policy.delay(2, rng1.random()) for _ in range(500)]
    assert a == [policy.delay(2, rng2.random()) for _ in range(500)]
    assert all(0.0 < d <= 3.0 for d in a), "base min(3, 1 * 2**2) = 3, minus up to all of it"
    assert min(a) < 0.3 and max(a) > 2.7


def test_partial_jitter_takes_off_at_most_its_fraction():
    policy = Backoff(initial=2.0, factor=1.0, jitter=0.25)
    assert policy.delay(0, 0.0) == 2.0
    assert policy.delay(0, 0.5) == pytest.approx(1.75)
    assert policy.delay(5, 0.999) > 1.5


@pytest.mark.parametrize("kwargs", [{"initial": -1.0}, {"initial": 1.0, "factor": 0.5},
                                    {"initial": 1.0, "jitter": 1.5}, {"initial": 1.0, "cap": -2.0}])
def test_a_nonsense_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_nonsense_inputs_are_refused():
    policy = Backoff(initial=1.0)
    with pytest.raises(ValueError):
        policy.delay(-1)
    with pytest.raises(ValueError):
        policy.delay(0, 1.0)


def test_the_driver_looks_for_a_missing_agent_with_growing_delays():
    sched = RetrySchedule()
    assert [sched.missed(0.0) for _ in range(6)] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4, 0.4])


def test_the_outbox_retries_a_peer_with_full_jitter_from_its_config():
    policy = retry_policy(AgentConfig(retry_backoff=0.05, retry_backoff_max=0.5))
    assert policy == Backoff(initial=0.05, factor=2.0, cap=0.5, jitter=1.0)
    assert policy.delay(1, 0.0) == pytest.approx(0.1) and policy.delay(10, 0.0) == 0.5
