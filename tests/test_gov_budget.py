"""Cost budgets (``governance._budget``): reserve before, settle after; an injected clock, no Ray."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import (
    Budget,
    BudgetError,
    BudgetPolicy,
    GovernanceError,
    PolicyError,
    Refusal,
    RefusalReason,
    Reservation,
)

T0 = 1_000.0


def budget(limit=100, period=None, **kw) -> Budget:
    return Budget(BudgetPolicy(limit=limit, period=period, **kw), T0)


# -- admission -------------------------------------------------------------------------------


def test_an_estimate_above_what_is_left_is_refused_before_anything_is_spent():
    b = budget(100)
    r = b.reserve("a", 101, T0)
    assert isinstance(r, Refusal) and not r.granted
    assert r.reason is RefusalReason.EXCEEDS_LIMIT and r.remaining == 100 and r.retry_at is None
    assert b.spent(T0) == 0 and b.reserved() == 0 and b.in_flight() == []


def test_reservations_in_flight_count_against_the_limit():
    b = budget(100)
    assert isinstance(b.reserve("a", 60, T0), Reservation)
    r = b.reserve("b", 50, T0)  # 60 in flight + 50 > 100, though nothing is spent yet
    assert isinstance(r, Refusal) and r.reason is RefusalReason.EXHAUSTED and r.remaining == 40
    assert b.reserve("c", 40, T0).granted  # exactly the limit is allowed
    assert b.remaining(T0) == 0


def test_settle_charges_the_actual_and_frees_the_rest_of_the_estimate():
    b = budget(100)
    b.reserve("a", 60, T0)
    s = b.settle("a", 25, T0 + 1)
    assert (s.estimate, s.actual, s.overrun, s.duplicate) == (60, 25, 0, False)
    u = b.usage(T0 + 1)
    assert (u.spent, u.reserved, u.remaining, u.in_flight) == (25, 0, 75, 0)


def test_release_frees_the_whole_estimate():
    b = budget(100)
    b.reserve("a", 60, T0)
    b.release("a", T0)
    assert b.remaining(T0) == 100 and b.spent(T0) == 0


def test_an_overrun_is_charged_in_full_and_blocks_what_follows():
    b = budget(100)
    b.reserve("a", 10, T0)
    s = b.settle("a", 130, T0)
    assert s.overrun == 120
    u = b.usage(T0)
    assert u.spent == 130 and u.remaining == 0 and u.overrun == 120
    assert b.reserve("b", 0.001, T0).reason is RefusalReason.EXHAUSTED


# -- keys ---------------------------------------------------------------------------------------


def test_reserving_again_with_the_same_key_and_estimate_returns_the_same_reservation():
    b = budget(100)
    first = b.reserve("a", 60, T0)
    assert b.reserve("a", 60, T0 + 1) == first
    assert b.reserved() == 60
    with pytest.raises(BudgetError):
        b.reserve("a", 61, T0 + 1)


def test_settling_twice_with_the_same_actual_is_a_no_op_and_with_another_an_error():
    b = budget(100)
    b.reserve("a", 60, T0)
    b.settle("a", 30, T0)
    again = b.settle("a", 30, T0 + 1)
    assert again.duplicate and b.spent(T0 + 1) == 30
    with pytest.raises(BudgetError, match="already settled at 30"):
        b.settle("a", 31, T0 + 1)


@pytest.mark.parametrize("act", ["settle", "release"])
def test_a_key_never_reserved_raises(act):
    b = budget(100)
    with pytest.raises(BudgetError, match="no such reservation"):
        b.settle("ghost", 1, T0) if act == "settle" else b.release("ghost", T0)


def test_settle_after_release_and_release_after_settle_raise_but_release_twice_does_not():
    b = budget(100)
    b.reserve("a", 10, T0)
    b.release("a", T0)
    b.release("a", T0)
    with pytest.raises(BudgetError, match="released"):
        b.settle("a", 10, T0)
    b.reserve("b", 10, T0)
    b.settle("b", 10, T0)
    with pytest.raises(BudgetError, match="settled"):
        b.release("b", T0)


def test_a_used_key_cannot_be_reserved_again_until_it_is_forgotten():
    b = budget(100, remember=60.0)
    b.reserve("a", 10, T0)
    b.settle("a", 10, T0)
    with pytest.raises(BudgetError, match="already used"):
        b.reserve("a", 10, T0 + 59)
    assert b.reserve("a", 10, T0 + 61).granted
    with pytest.raises(BudgetError, match="no such reservation"):
        budget(100, remember=60.0).settle("a", 10, T0 + 61)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "3", None, True])
def test_a_bad_amount_raises(bad):
    b = budget(100)
    with pytest.raises(BudgetError):
        b.reserve("a", bad, T0)
    b.reserve("b", 1, T0)
    with pytest.raises(BudgetError):
        b.settle("b", bad, T0)


# -- crashed reservers ----------------------------------------------------------------------------


def test_expired_reservations_are_released_and_a_late_settle_is_still_charged():
    b = budget(100)
    b.reserve("old", 50, T0)
    b.reserve("new", 30, T0 + 50)
    assert b.expire_reservations(T0 + 61, older_than=60) == ["old"]
    assert b.reserved() == 30
    b.release("old", T0 + 62)  # a no-op: it was already freed
    s = b.settle("old", 20, T0 + 62)  # it was made after all
    assert s.overrun == 20 and b.spent(T0 + 62) == 20


# -- periods ------------------------------------------------------------------------------------------


def test_a_new_period_starts_with_nothing_spent_and_carries_reservations_over():
    b = budget(100, period=3600.0)
    b.reserve("a", 70, T0)
    b.settle("a", 70, T0)
    b.reserve("b", 20, T0 + 10)
    refused = b.reserve("c", 20, T0 + 20)
    assert refused.reason is RefusalReason.EXHAUSTED and refused.retry_at == T0 + 3600
    u = b.usage(T0 + 3600)
    assert (u.spent, u.reserved, u.remaining, u.period_start, u.period_end) == (0, 20, 80, T0 + 3600, T0 + 7200)
    b.settle("b", 20, T0 + 3601)  # charged to the period it is settled in
    assert b.spent(T0 + 3601) == 20


def test_a_clock_that_goes_back_does_not_return_to_a_past_period():
    b = budget(100, period=10.0)
    b.reserve("a", 50, T0 + 15)
    b.settle("a", 50, T0 + 15)
    assert b.spent(T0 + 5) == 50


def test_a_lifetime_budget_never_rolls_over():
    b = budget(100)
    b.reserve("a", 100, T0)
    b.settle("a", 100, T0)
    assert b.remaining(T0 + 10**9) == 0 and b.usage(T0).period_end is None


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": 10, "period": 0}, {"limit": 10, "max_overrun": 1},
                                 {"period": 10}])
def test_an_invalid_policy_raises_policy_error(bad):
    with pytest.raises(PolicyError):
        BudgetPolicy(**bad)


# -- snapshots ---------------------------------------------------------------------------------------


def test_snapshot_restore_round_trip_with_reservations_in_flight():
    b = budget(100, period=3600.0)
    b.reserve("a", 30, T0)
    b.settle("a", 25, T0)
    b.reserve("b", 40, T0 + 1)
    b.reserve("c", 5, T0 + 2)
    b.release("c", T0 + 2)
    r = Budget.restore(b.policy, msgpack.unpackb(msgpack.packb(b.snapshot())))
    assert r.snapshot() == b.snapshot()
    assert r.usage(T0 + 3) == b.usage(T0 + 3)
    assert r.settle("b", 40, T0 + 4).overrun == 0  # the reservation survived
    with pytest.raises(BudgetError):
        r.settle("a", 26, T0 + 4)  # and so did the memory of settled keys
    assert r.reserve("d", 36, T0 + 5).reason is RefusalReason.EXHAUSTED


@pytest.mark.parametrize("bad", [{}, {"v": 2}, {**budget().snapshot(), "spent": -5}])
def test_an_unreadable_snapshot_raises_governance_error(bad):
    with pytest.raises(GovernanceError):
        Budget.restore(BudgetPolicy(limit=1), bad)


# -- the bound, over any interleaving --------------------------------------------------------------

LIMIT = 1_000


def ops(overrun: bool):
    estimate = st.integers(0, 400)
    actual = st.integers(0, 2_000) if overrun else st.floats(0, 1)  # absolute / fraction of the estimate
    return st.lists(st.one_of(
        st.tuples(st.just("reserve"), estimate),
        st.tuples(st.just("settle"), st.integers(0, 50), actual),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("expire"), st.integers(0, 30)),
        st.tuples(st.just("tick"), st.integers(0, 40)),
        st.tuples(st.just("restore")),
    ), max_size=80)


def run(steps, overrun: bool) -> None:
    """Apply ``steps``; after each, check the invariant against figures the test keeps itself."""
    policy = BudgetPolicy(limit=LIMIT, period=100.0)
    b = Budget(policy, 0.0)
    now, n = 0.0, 0
    in_flight: dict[str, int] = {}  # key -> estimate
    expired: dict[str, int] = {}
    settled_overrun = {}  # period index -> sum of overruns settled in it
    for step in steps:
        kind = step[0]
        if kind == "reserve":
            key, n = f"k{n}", n + 1
            r = b.reserve(key, step[1], now)
            if r.granted:
                in_flight[key] = step[1]
        elif kind in ("settle", "release") and (in_flight or expired):
            pool = sorted(in_flight) + sorted(expired)
            key = pool[step[1] % len(pool)]
            est = in_flight.pop(key, None)
            late = est is None
            if late:
                est = expired.pop(key)
            if kind == "release":
                b.release(key, now)
            else:
                actual = step[2] if overrun else int(est * step[2])
                charged = actual if late else max(0, actual - est)
                period = int(now // 100)
                settled_overrun[period] = settled_overrun.get(period, 0) + charged
                assert b.settle(key, actual, now).overrun == charged
        elif kind == "expire":
            for key in b.expire_reservations(now, older_than=step[1]):
                expired[key] = in_flight.pop(key)
        elif kind == "tick":
            now += step[1]
        elif kind == "restore":
            b = Budget.restore(policy, msgpack.unpackb(msgpack.packb(b.snapshot())))
        u = b.usage(now)
        bound = settled_overrun.get(int(now // 100), 0)
        assert u.reserved == sum(in_flight.values())
        assert u.spent + u.reserved <= LIMIT + bound
        assert u.spent - LIMIT <= bound == u.overrun
        if not overrun:
            assert u.spent <= LIMIT


@settings(max_examples=100, deadline=None)
@given(ops(overrun=False))
def test_spent_never_exceeds_the_limit_when_no_actual_exceeds_its_estimate(steps):
    run(steps, overrun=False)


@settings(max_examples=100, deadline=None)
@given(ops(overrun=True))
def test_the_overspend_never_exceeds_the_documented_bound(steps):
    run(steps, overrun=True)
