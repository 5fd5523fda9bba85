"""Behavioural drift (``governance._behaviour``): pure logic, observations given by hand, no clock."""

from __future__ import annotations

import pytest

from governance import BehaviourLevel, BehaviourMonitor, BehaviourPolicy, Observation, PolicyError

V1, V2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
POLICY = BehaviourPolicy(baseline=20, window=10, flag_at=0.3, pause_at=0.6)


def _feed(monitor, version, observations):
    return [v for o in observations if (v := monitor.observe(version, o)) is not None]


def ship(cost=0.5, seconds=0.01, code="ok"):
    return Observation("shop.ship@1", code, cost, seconds)


def refund(cost=0.5, seconds=0.01, code="ok"):
    return Observation("shop.refund@1", code, cost, seconds)


def test_nothing_is_judged_before_the_baseline_and_the_window_are_full_and_steady_behaviour_is_normal():
    monitor = BehaviourMonitor(POLICY)
    assert _feed(monitor, V1, [refund()] * 29) == [], "29 < 20 + 10: not judged, whatever it does"
    monitor = BehaviourMonitor(POLICY)
    assert _feed(monitor, V1, [ship(), refund()] * 50) == []
    assert monitor.last is not None and monitor.last.distance == pytest.approx(0.0, abs=1e-9)
    assert monitor.status(V1) == {"level": "normal", "baseline": 20, "recent": 10, "last": monitor.last.describe()}


def test_a_changed_action_mix_is_flagged_then_paused_once_each():
    monitor = BehaviourMonitor(POLICY)
    _feed(monitor, V1, [ship()] * 20)
    verdicts = _feed(monitor, V1, [refund()] * 4 + [ship()] * 6)  # the mix moved by 0.4
    assert [(level, round(r.distance, 2)) for level, r in verdicts] == [(BehaviourLevel.FLAGGED, 0.4)]
    assert "action mix" in verdicts[0][1].why()
    verdicts = _feed(monitor, V1, [refund()] * 10)
    assert [(level, round(r.distance, 2)) for level, r in verdicts] == [(BehaviourLevel.PAUSED, 0.6)]
    assert _feed(monitor, V1, [refund()] * 10) == [], "paused once; only a reset starts over"
    monitor.reset(V1)
    assert monitor.level(V1) is BehaviourLevel.NORMAL and monitor.status(V1)["baseline"] == 0


def test_error_and_denial_rates_cost_and_latency_move_the_distance_each_against_its_floor():
    def after(recent):
        monitor = BehaviourMonitor(BehaviourPolicy(baseline=20, window=10, flag_at=0.3, pause_at=None))
        _feed(monitor, V1, [ship()] * 20)
        _feed(monitor, V1, recent)
        return monitor.last

    failing = after([ship(code="failed")] * 3 + [ship()] * 7)
    assert round(failing.values["outcomes"], 2) == 0.3 and failing.values["action_mix"] == 0
    assert round(after([ship(code="denied")] * 5 + [ship()] * 5).values["outcomes"], 2) == 0.5
    assert round(after([ship(cost=1.0)] * 10).values["cost"], 2) == 1.0       # doubled: capped at 1
    assert round(after([ship(cost=0.6)] * 10).values["cost"], 2) == 0.2
    # Latency counts half, against max(baseline, 0.1 s): 10 ms -> 30 ms on a loaded machine is not drift.
    assert round(after([ship(seconds=0.03)] * 10).values["latency"], 2) == 0.1
    assert round(after([ship(seconds=1.0)] * 10).values["latency"], 2) == 0.5
    # A baseline of free actions: a cent is not infinite drift.
    monitor = BehaviourMonitor(POLICY)
    _feed(monitor, V1, [ship(cost=0.0)] * 20)
    assert _feed(monitor, V1, [ship(cost=0.001)] * 10) == [] and monitor.last.values["cost"] == pytest.approx(0.1)


def test_each_version_has_its_own_baseline():
    monitor = BehaviourMonitor(POLICY)
    _feed(monitor, V1, [ship()] * 30)
    assert _feed(monitor, V2, [refund()] * 30) == [], "what a new version does by design is its baseline"
    assert monitor.level(V1) is monitor.level(V2) is BehaviourLevel.NORMAL
    assert [lv for lv, _ in _feed(monitor, V2, [ship()] * 10)] == [BehaviourLevel.FLAGGED, BehaviourLevel.PAUSED]
    assert monitor.level(V1) is BehaviourLevel.NORMAL


@pytest.mark.parametrize("fields", [{"flag_at": 0.5, "pause_at": 0.4}, {"weights": {"tone": 1.0}},
                                    {"weights": {"cost": 2.0}}, {"window": 0}, {"flag_at": 0}])
def test_a_bad_policy_is_refused(fields):
    with pytest.raises(PolicyError):
        BehaviourPolicy(**fields)
