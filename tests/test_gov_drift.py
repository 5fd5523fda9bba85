"""The semantic breaker (``governance._drift``): deterministic scorers, an injected clock."""

from __future__ import annotations

import math

import msgpack
import pytest

from governance import BreakerState, DriftMonitor, DriftPolicy, GovernanceError, PolicyError, TransitionReason

T0 = 1_000.0


def off_topic(output: str) -> float:
    """A deterministic scorer: the share of words not about refunds."""
    words = output.split()
    return sum(1 for w in words if w not in {"refund", "order", "issued"}) / len(words)


def test_trips_on_a_drifting_scorer_and_says_why():
    m = DriftMonitor(DriftPolicy(window=4, min_samples=4, threshold=0.5), off_topic)
    outputs = ["refund issued", "refund order issued", "refund issued poem", "sonnet about the sea",
               "limerick about cheese", "haiku about fog"]
    transitions = [m.observe(o, T0 + i) for i, o in enumerate(outputs)]
    tripped = [t for t in transitions if t is not None]
    assert len(tripped) == 1
    t = tripped[0]
    assert (t.from_state, t.to_state, t.reason) == (BreakerState.CLOSED, BreakerState.OPEN, TransitionReason.DRIFT)
    # Windows: [0, 0, 1/3, 1] = 0.33 at the fourth output; [0, 1/3, 1, 1] = 0.58 at the fifth.
    assert t.at == T0 + 4 and "0.583" in t.detail
    assert m.state is BreakerState.OPEN


def test_does_not_trip_on_a_stable_scorer():
    m = DriftMonitor(DriftPolicy(window=5, min_samples=3, threshold=0.5), lambda out: 0.49)
    assert all(m.observe(i, T0 + i) is None for i in range(100))
    assert m.state is BreakerState.CLOSED
    assert m.mean == pytest.approx(0.49)


def test_no_trip_before_min_samples_even_at_full_drift():
    m = DriftMonitor(DriftPolicy(window=10, min_samples=5, threshold=0.5), lambda out: 1.0)
    assert [m.observe("x", T0) is None for _ in range(5)] == [True, True, True, True, False]


def test_the_mean_is_over_the_last_window_scores_only():
    scores = iter([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    m = DriftMonitor(DriftPolicy(window=4, min_samples=4, threshold=0.5), lambda out: next(scores))
    results = [m.observe("x", T0) for _ in range(7)]
    # Windows at samples 4..7: [1,1,0,0] = 0.5 trips at once.
    assert results[3] is not None and all(r is None for i, r in enumerate(results) if i != 3)
    assert m.mean == pytest.approx(0.25)  # [0, 0, 0, 1]: still OPEN: drift holds until reset


def test_stays_open_until_an_operator_resets_it_and_then_starts_afresh():
    m = DriftMonitor(DriftPolicy(window=3, min_samples=3, threshold=0.5), lambda out: out)
    for _ in range(3):
        m.observe(0.9, T0)
    assert m.state is BreakerState.OPEN
    for _ in range(10):
        assert m.observe(0.0, T0 + 1) is None
    assert m.state is BreakerState.OPEN
    t = m.reset("alice", T0 + 2)
    assert (t.to_state, t.reason, t.who) == (BreakerState.CLOSED, TransitionReason.OPERATOR_RESET, "alice")
    assert m.samples == 0
    assert m.observe(0.9, T0 + 3) is None and m.observe(0.9, T0 + 3) is None  # min_samples again
    assert m.observe(0.9, T0 + 3) is not None
    assert DriftMonitor(m.policy, m.scorer).reset("alice", T0) is None  # a closed monitor: nothing to reset


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "0.5", None, True])
def test_a_bad_score_raises_and_is_not_kept(bad):
    m = DriftMonitor(DriftPolicy(window=3, min_samples=1), lambda out: bad)
    with pytest.raises(GovernanceError, match=r"\[0, 1\]"):
        m.observe("x", T0)
    assert m.samples == 0


@pytest.mark.parametrize("bad", [{"window": 0}, {"threshold": 0}, {"threshold": 1.1},
                                 {"min_samples": 5, "window": 3}, {"alpha": 0.1}])
def test_an_invalid_policy_raises_policy_error(bad):
    with pytest.raises(PolicyError):
        DriftPolicy(**bad)


def test_snapshot_restore_round_trip_mid_window():
    policy = DriftPolicy(window=4, min_samples=4, threshold=0.5)
    m = DriftMonitor(policy, lambda out: out)
    for s in (0.9, 0.9, 0.1):
        m.observe(s, T0)
    r = DriftMonitor.restore(policy, m.scorer, msgpack.unpackb(msgpack.packb(m.snapshot())))
    assert r.snapshot() == m.snapshot() and r.state is BreakerState.CLOSED
    assert r.observe(0.2, T0 + 1) is not None  # (0.9 + 0.9 + 0.1 + 0.2) / 4 = 0.525
    opened = DriftMonitor.restore(policy, m.scorer, r.snapshot())
    assert opened.state is BreakerState.OPEN


def test_an_unreadable_snapshot_raises_governance_error():
    with pytest.raises(GovernanceError):
        DriftMonitor.restore(DriftPolicy(), lambda out: 0.0, {"v": 1, "state": "half_open", "since": None,
                                                              "scores": []})
