"""Circuit breakers (``governance._breaker``), driven with an injected clock: no Ray, no sleeps."""

from __future__ import annotations

import msgpack
import pytest
from pydantic import ValidationError

from governance import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    CallResult,
    GovernanceError,
    PolicyError,
    TransitionReason,
)

OK, FAIL, BIZ = CallResult.SUCCESS, CallResult.FAILURE, CallResult.BUSINESS_ERROR
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
T0 = 1_000.0


def consecutive_only(n: int = 3, **kw) -> BreakerPolicy:
    return BreakerPolicy(consecutive_failures=n, failure_rate=None, **kw)


def call(b: Breaker, result: CallResult, now: float, duration: float = 0.01):
    adm = b.allow(now)
    assert adm.allowed, adm
    return b.record(result, duration, now + duration, generation=adm.generation)


def tripped(b: Breaker, now: float = T0) -> float:
    """Fail calls until ``b`` opens; the time it opened."""
    for i in range(100):
        if call(b, FAIL, now + i) is not None:
            assert b.state is OPEN
            return now + i + 0.01
    raise AssertionError("never tripped")


# -- policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"consecutive_failures": 0},
    {"failure_rate": 1.5},
    {"failure_rate": 0},
    {"min_calls": 30, "window_calls": 20},
    {"open_for": 60, "open_for_max": 30},
    {"open_for_factor": 0.5},
    {"consecutive_failures": None, "failure_rate": None},
    {"half_open_probes": 0},
    {"surprise": 1},
])
def test_an_invalid_policy_raises_policy_error_not_pydantics(bad):
    with pytest.raises(PolicyError) as info:
        BreakerPolicy(**bad)
    assert info.value.details["errors"]


def test_a_policy_is_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        BreakerPolicy().open_for = 1  # type: ignore[misc]


# -- closed: tripping ----------------------------------------------------------------------


def test_opens_after_n_consecutive_failures_and_not_before():
    b = Breaker(consecutive_only(3))
    assert call(b, FAIL, T0) is None
    assert call(b, FAIL, T0 + 1) is None
    assert b.state is CLOSED
    t = call(b, FAIL, T0 + 2)
    assert t is not None and (t.from_state, t.to_state) == (CLOSED, OPEN)
    assert t.reason is TransitionReason.CONSECUTIVE_FAILURES
    assert t.at == T0 + 2.01
    refused = b.allow(T0 + 3)
    assert not refused.allowed and refused.state is OPEN
    assert refused.until == pytest.approx(T0 + 2.01 + 30.0)


def test_a_success_resets_the_consecutive_count():
    b = Breaker(consecutive_only(3))
    for r in (FAIL, FAIL, OK, FAIL, FAIL):
        assert call(b, r, T0) is None
    assert b.state is CLOSED


def test_business_errors_neither_count_nor_reset_the_consecutive_count():
    b = Breaker(consecutive_only(3))
    call(b, FAIL, T0)
    call(b, FAIL, T0)
    for _ in range(10):
        assert call(b, BIZ, T0) is None
    assert b.state is CLOSED
    assert call(b, FAIL, T0) is not None  # the third counted failure in a row


def test_business_errors_do_not_enter_the_rate_window():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=0.5, window_calls=4, min_calls=4))
    for r in (FAIL, OK, BIZ, BIZ, BIZ, BIZ, BIZ):
        assert call(b, r, T0) is None
    assert call(b, OK, T0) is None  # 3 counted: 1 failure of 3
    t = call(b, FAIL, T0)  # 4 counted: 2 of 4 failed
    assert t is not None and t.reason is TransitionReason.FAILURE_RATE


def test_the_failure_rate_trips_only_once_the_window_holds_min_calls():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=0.5, window_calls=10, min_calls=5))
    for i in range(4):  # 100% failures, but only 4 calls
        assert call(b, FAIL, T0 + i) is None
    assert b.state is CLOSED
    t = call(b, OK, T0 + 4)  # 4 of 5 failed
    assert t is not None and t.reason is TransitionReason.FAILURE_RATE
    assert "4 of the last 5" in t.detail


def test_the_failure_rate_is_over_the_last_window_calls_only():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=0.5, window_calls=4, min_calls=4))
    for r in (FAIL, OK, OK, OK, FAIL, OK, OK):  # the first failure leaves the window before the second comes
        assert call(b, r, T0) is None
    t = call(b, FAIL, T0)  # window: FAIL OK OK FAIL -> 2 of 4
    assert t is not None and t.reason is TransitionReason.FAILURE_RATE


def test_a_time_window_forgets_calls_older_than_window_seconds():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=0.5, window_calls=100,
                              window_seconds=10.0, min_calls=3))
    call(b, FAIL, T0)
    call(b, FAIL, T0 + 1)
    # 20 s later both failures have aged out: two successes then a failure is 1 of 3, not 3 of 5.
    assert call(b, OK, T0 + 20) is None
    assert call(b, OK, T0 + 21) is None
    assert call(b, FAIL, T0 + 22) is None
    assert b.state is CLOSED
    assert call(b, FAIL, T0 + 23) is not None  # 2 of 4 within 10 s


def test_slow_calls_trip_on_the_slow_rate_even_when_they_succeed():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=None, slow_call=2.0, slow_rate=0.5,
                              window_calls=4, min_calls=4))
    assert call(b, OK, T0, duration=5.0) is None
    assert call(b, OK, T0, duration=2.0) is None  # exactly the limit is not slow
    assert call(b, OK, T0, duration=0.1) is None
    t = call(b, OK, T0, duration=3.0)
    assert t is not None and t.reason is TransitionReason.SLOW_RATE


def test_fast_calls_do_not_trip_the_slow_rate():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=None, slow_call=2.0, slow_rate=0.5,
                              window_calls=4, min_calls=4))
    for _ in range(20):
        assert call(b, OK, T0, duration=1.9) is None
    assert b.state is CLOSED


# -- open and half-open --------------------------------------------------------------------


def test_open_refuses_until_open_for_then_half_opens_on_the_next_allow():
    b = Breaker(consecutive_only(1, open_for=10.0))
    opened = tripped(b)
    assert not b.allow(opened + 9.99).allowed
    assert b.state is OPEN
    adm = b.allow(opened + 10.0)
    assert adm.allowed and adm.probe and adm.state is HALF_OPEN
    assert adm.transition is not None
    assert (adm.transition.from_state, adm.transition.to_state) == (OPEN, HALF_OPEN)
    assert adm.transition.reason is TransitionReason.OPEN_ELAPSED


def test_a_successful_probe_closes_the_breaker():
    b = Breaker(consecutive_only(1, open_for=10.0))
    opened = tripped(b)
    adm = b.allow(opened + 10)
    t = b.record(OK, 0.1, opened + 10.1, generation=adm.generation)
    assert t is not None and (t.from_state, t.to_state) == (HALF_OPEN, CLOSED)
    assert t.reason is TransitionReason.PROBES_SUCCEEDED
    assert b.allow(opened + 11).allowed


def test_a_failed_probe_reopens_and_the_open_period_grows_up_to_its_cap():
    b = Breaker(consecutive_only(1, open_for=10.0, open_for_factor=2.0, open_for_max=25.0))
    now = tripped(b)
    for expected in (20.0, 25.0, 25.0):
        now += b.open_until - now  # exactly when it may half-open
        adm = b.allow(now)
        assert adm.probe
        t = b.record(FAIL, 0.1, now, generation=adm.generation)
        assert t is not None and (t.from_state, t.to_state) == (HALF_OPEN, OPEN)
        assert t.reason is TransitionReason.PROBE_FAILED
        assert b.open_until == pytest.approx(now + expected)


def test_closing_resets_the_open_period():
    b = Breaker(consecutive_only(1, open_for=10.0, open_for_factor=2.0))
    now = tripped(b)
    adm = b.allow(now + 10)
    b.record(FAIL, 0.1, now + 10, generation=adm.generation)  # reopened for 20 s
    adm = b.allow(now + 30)
    b.record(OK, 0.1, now + 30, generation=adm.generation)
    assert b.state is CLOSED
    now = tripped(b, now + 40)
    assert b.open_until == pytest.approx(now + 10.0)


def test_a_slow_probe_counts_as_failed():
    b = Breaker(consecutive_only(1, open_for=10.0, slow_call=1.0))
    now = tripped(b)
    adm = b.allow(now + 10)
    t = b.record(OK, 1.5, now + 11.5, generation=adm.generation)
    assert t is not None and t.reason is TransitionReason.PROBE_SLOW and b.state is OPEN


def test_half_open_admits_only_n_probes_and_needs_all_of_them_to_succeed():
    b = Breaker(consecutive_only(1, open_for=10.0, half_open_probes=2))
    now = tripped(b) + 10
    first, second, third = b.allow(now), b.allow(now), b.allow(now)
    assert first.probe and second.probe
    assert not third.allowed and third.state is HALF_OPEN and third.until is None
    assert b.record(OK, 0.1, now, generation=first.generation) is None  # one of two
    assert b.state is HALF_OPEN
    assert not b.allow(now).allowed  # a success does not free a slot: the episode allows 2 probes in all
    t = b.record(OK, 0.1, now, generation=second.generation)
    assert t is not None and t.to_state is CLOSED


def test_one_failed_probe_of_several_reopens():
    b = Breaker(consecutive_only(1, open_for=10.0, half_open_probes=3))
    now = tripped(b) + 10
    probes = [b.allow(now) for _ in range(3)]
    assert b.record(OK, 0.1, now, generation=probes[0].generation) is None
    t = b.record(FAIL, 0.1, now, generation=probes[1].generation)
    assert t is not None and t.to_state is OPEN
    # The third probe's late record belongs to a past episode: ignored.
    assert b.record(OK, 0.1, now, generation=probes[2].generation) is None
    assert b.state is OPEN


def test_a_business_error_probe_frees_its_slot_without_counting():
    b = Breaker(consecutive_only(1, open_for=10.0, half_open_probes=1))
    now = tripped(b) + 10
    adm = b.allow(now)
    assert not b.allow(now).allowed
    assert b.record(BIZ, 0.1, now, generation=adm.generation) is None
    assert b.state is HALF_OPEN
    again = b.allow(now)
    assert again.probe
    assert b.record(OK, 0.1, now, generation=again.generation).to_state is CLOSED


def test_a_probe_never_recorded_is_lost_after_probe_timeout_and_reopens():
    b = Breaker(consecutive_only(1, open_for=10.0, probe_timeout=5.0))
    now = tripped(b) + 10
    assert b.allow(now).probe  # its caller dies
    assert not b.allow(now + 4.9).allowed and b.state is HALF_OPEN
    adm = b.allow(now + 5.0)
    assert not adm.allowed and adm.state is OPEN
    assert adm.transition is not None and adm.transition.reason is TransitionReason.PROBE_LOST


def test_a_straggler_admitted_while_closed_is_not_taken_for_a_probe():
    b = Breaker(consecutive_only(2, open_for=10.0))
    slow_one = b.allow(T0)  # admitted while closed, answers late
    tripped(b, T0)
    probe = b.allow(T0 + 20)
    assert probe.probe
    assert b.record(OK, 15.0, T0 + 20, generation=slow_one.generation) is None
    assert b.state is HALF_OPEN
    assert b.record(FAIL, 0.1, T0 + 20, generation=probe.generation).to_state is OPEN


def test_records_while_open_are_ignored():
    b = Breaker(consecutive_only(1))
    opened = tripped(b)
    assert b.record(FAIL, 0.1, opened + 1) is None
    assert b.record(OK, 0.1, opened + 1) is None
    assert b.state is OPEN


# -- operators -------------------------------------------------------------------------------


def test_an_operator_trip_holds_open_until_reset():
    b = Breaker(consecutive_only(3, open_for=10.0))
    t = b.trip("alice", T0, "kill switch")
    assert t.to_state is OPEN and t.reason is TransitionReason.OPERATOR_TRIP and t.who == "alice"
    refused = b.allow(T0 + 10_000)
    assert not refused.allowed and refused.until is None
    assert b.trip("alice", T0 + 1) is None  # already held
    t = b.reset("bob", T0 + 10_001)
    assert (t.from_state, t.to_state, t.who) == (OPEN, CLOSED, "bob")
    assert b.allow(T0 + 10_001).allowed
    assert b.reset("bob", T0 + 10_002) is None


def test_transition_to_dict_is_msgpack_friendly():
    b = Breaker(consecutive_only(1))
    call(b, FAIL, T0)
    t = b.trip("ops", T0 + 1)
    d = msgpack.unpackb(msgpack.packb(t.to_dict()))
    assert d["from"] == "open" and d["to"] == "open" and d["reason"] == "operator_trip" and d["who"] == "ops"


# -- snapshots ---------------------------------------------------------------------------------


def roundtrip(b: Breaker) -> Breaker:
    return Breaker.restore(b.policy, msgpack.unpackb(msgpack.packb(b.snapshot())))


def test_a_restored_closed_breaker_keeps_its_count_and_window():
    b = Breaker(BreakerPolicy(consecutive_failures=3, failure_rate=0.5, window_calls=4, min_calls=4))
    call(b, OK, T0)
    call(b, FAIL, T0)
    call(b, FAIL, T0)
    r = roundtrip(b)
    assert r.snapshot() == b.snapshot()
    t = call(r, FAIL, T0)  # the third in a row, across the restore
    assert t is not None and t.reason is TransitionReason.CONSECUTIVE_FAILURES


def test_a_restored_half_open_breaker_keeps_its_probes_and_generation():
    b = Breaker(consecutive_only(1, open_for=10.0, half_open_probes=2))
    now = tripped(b) + 10
    first = b.allow(now)
    b.record(OK, 0.1, now, generation=first.generation)
    second = b.allow(now)  # in flight across the restore
    r = roundtrip(b)
    assert r.state is HALF_OPEN and r.generation == b.generation
    assert not r.allow(now).allowed  # both slots are taken
    t = r.record(OK, 0.1, now, generation=second.generation)
    assert t is not None and t.to_state is CLOSED


def test_a_restored_open_breaker_stays_open_until_its_time():
    b = Breaker(consecutive_only(1, open_for=10.0))
    opened = tripped(b)
    r = roundtrip(b)
    assert not r.allow(opened + 5).allowed
    assert r.allow(opened + 10).probe


def test_restoring_under_a_smaller_window_keeps_the_newest_calls():
    b = Breaker(BreakerPolicy(consecutive_failures=None, failure_rate=0.5, window_calls=10, min_calls=10))
    for r in (FAIL, OK, FAIL, OK):
        call(b, r, T0)
    small = Breaker.restore(BreakerPolicy(consecutive_failures=None, failure_rate=0.5, window_calls=2,
                                          min_calls=2), b.snapshot())
    assert small.snapshot()["window"] == b.snapshot()["window"][-2:]
    assert call(small, OK, T0) is None  # window [FAIL, OK] -> [OK, OK]: the older failure is gone
    assert call(small, FAIL, T0) is not None  # [OK, FAIL]: 1 of 2


@pytest.mark.parametrize("bad", [{}, {"v": 99}, {**Breaker(BreakerPolicy()).snapshot(), "state": "ajar"}])
def test_an_unreadable_snapshot_raises_governance_error(bad):
    with pytest.raises(GovernanceError):
        Breaker.restore(BreakerPolicy(), bad)
