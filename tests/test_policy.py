"""Supervision policy as pure functions: specs, intensity, the OTP matrix, backoff, probes.

No Ray, no sleeps: every time-dependent function takes the clock reading.
"""

from __future__ import annotations

import math
import random

import pytest

from runtime import GarrisonError
from supervisors import (
    BackoffPolicy,
    ChildSpec,
    DegradedAction,
    DuplicateChildId,
    ExitReason,
    HangAction,
    ProbePolicy,
    RestartType,
    SpecError,
    Strategy,
    SupervisorError,
    SupervisorFlags,
    SupervisorSpec,
)
from supervisors._backoff import consecutive_failures, restart_delay
from supervisors._health import DegradedJudgement, Verdict, judge_degraded, judge_probe
from supervisors._intensity import add_restart
from supervisors._strategy import ChildView, Plan, plan_restart, should_restart
from tests.agents import Counter

P, TR, TE = RestartType.PERMANENT, RestartType.TRANSIENT, RestartType.TEMPORARY

# -- specs: defaults and fail-fast validation ----------------------------------------------


def test_child_spec_defaults_follow_otp():
    spec = ChildSpec(id="a", agent=Counter)
    assert spec.restart is P
    assert spec.shutdown == 5.0
    assert spec.probe is None
    sub = ChildSpec(id="sub", supervisor=SupervisorSpec(id="sub"))
    assert sub.shutdown == math.inf
    flags = SupervisorFlags()
    assert (flags.strategy, flags.intensity, flags.period) == (Strategy.ONE_FOR_ONE, 1, 5.0)


def test_specs_are_frozen():
    spec = ChildSpec(id="a", agent=Counter)
    with pytest.raises(Exception):
        spec.restart = TE  # type: ignore[misc]


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: SupervisorFlags(strategy="one_for_some"), "strategy"),
        (lambda: SupervisorFlags(intensity=-1), "intensity"),
        (lambda: SupervisorFlags(period=0), "period"),
        (lambda: ChildSpec(id="a", agent=Counter, restart="sometimes"), "restart"),
        (lambda: ChildSpec(id="a", agent=Counter, shutdown=-1), "shutdown"),
        (lambda: ChildSpec(id="a", agent=dict), "not a subclass of runtime.Agent"),
        (lambda: ChildSpec(id="a"), "exactly one of agent= and supervisor="),
        (lambda: ChildSpec(id="bad id!", agent=Counter), "agent id"),
        (lambda: ChildSpec(id="a", agent=Counter, config={"checkpoint_interval": -1}), "checkpoint_interval"),
        (lambda: ChildSpec(id="a", agent=Counter, colour="red"), "colour"),
        (lambda: SupervisorSpec(id="p", flags=SupervisorFlags(strategy="simple_one_for_one")), "template"),
        (lambda: BackoffPolicy(initial=2, max_delay=1), "max_delay"),
        (lambda: ProbePolicy(missed_limit=0), "missed_limit"),
        (lambda: ChildSpec(id="a", agent=Counter, ray_options={"name": "b"}), "supervisor owns them"),
        (lambda: SupervisorFlags(standby=-1), "standby"),
    ],
)
def test_bad_configuration_fails_fast_with_a_typed_error(build, fragment):
    with pytest.raises(SpecError) as info:
        build()
    assert fragment in str(info.value)
    assert isinstance(info.value, SupervisorError) and isinstance(info.value, GarrisonError)
    assert info.value.__cause__ is not None  # pydantic's error kept as the cause


def test_duplicate_child_ids_are_refused_with_their_own_error():
    with pytest.raises(DuplicateChildId) as info:
        SupervisorSpec(id="s", children=[ChildSpec(id="a", agent=Counter), ChildSpec(id="a", agent=Counter)])
    assert info.value.details == {"supervisor": "s", "child": "a"}
    assert isinstance(info.value, SpecError)


# -- intensity: add_restart as in supervisor.erl ------------------------------------------


def test_n_restarts_within_the_period_are_allowed_and_the_next_escalates():
    restarts: tuple[float, ...] = ()
    for now in (100.0, 101.0, 102.0):
        ok, restarts = add_restart(restarts, now, period=5.0, intensity=3)
        assert ok
    ok, restarts = add_restart(restarts, 103.0, period=5.0, intensity=3)
    assert not ok  # ok only while <= 3: this is the fourth within 5 s
    assert restarts == (103.0, 102.0, 101.0, 100.0)


def test_n_plus_one_restarts_spread_wider_than_the_period_never_escalate():
    restarts: tuple[float, ...] = ()
    for i in range(50):
        ok, restarts = add_restart(restarts, 1000.0 + 2.6 * i, period=5.0, intensity=2)
        assert ok, i
        assert len(restarts) <= 2  # older ones fall out of the window


def test_the_window_is_closed_at_both_ends():
    ok, r = add_restart((95.0,), 100.0, period=5.0, intensity=1)
    assert not ok and r == (100.0, 95.0)  # exactly `period` old still counts, as in OTP
    ok, r = add_restart((94.999,), 100.0, period=5.0, intensity=1)
    assert ok and r == (100.0,)


def test_intensity_zero_escalates_on_the_first_restart():
    assert add_restart((), 0.0, period=1.0, intensity=0) == (False, (0.0,))


# -- the strategy x restart type x exit reason matrix (OTP supervisor_SUITE) -----------------

#: Whether the exited child itself restarts: restart type x exit reason.
RESTARTS = {
    (P, ExitReason.NORMAL): True, (P, ExitReason.SHUTDOWN): True, (P, ExitReason.CRASH): True,
    (P, ExitReason.HUNG): True, (P, ExitReason.START_FAILED): True,
    (TR, ExitReason.NORMAL): False, (TR, ExitReason.SHUTDOWN): False, (TR, ExitReason.CRASH): True,
    (TR, ExitReason.HUNG): True, (TR, ExitReason.START_FAILED): True,
    (TE, ExitReason.NORMAL): False, (TE, ExitReason.SHUTDOWN): False, (TE, ExitReason.CRASH): False,
    (TE, ExitReason.HUNG): False, (TE, ExitReason.START_FAILED): False,
    (P, ExitReason.DEGRADED): True, (TR, ExitReason.DEGRADED): True, (TE, ExitReason.DEGRADED): False,
}

#: Children a (permanent), b (the one that exits), c (transient), d (temporary), all running.
#: When b restarts, the strategy decides: (stopped in this order, started in this order, removed).
AFFECTED = {
    Strategy.ONE_FOR_ONE: ((), ("b",), ()),
    Strategy.SIMPLE_ONE_FOR_ONE: ((), ("b",), ()),
    Strategy.ONE_FOR_ALL: (("d", "c", "a"), ("a", "b", "c"), ("d",)),
    Strategy.REST_FOR_ONE: (("d", "c"), ("b", "c"), ("d",)),
}


@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.value)
@pytest.mark.parametrize("restart", [P, TR, TE], ids=lambda r: r.value)
@pytest.mark.parametrize("reason", list(ExitReason), ids=lambda r: r.value)
def test_exactly_the_expected_children_restart_in_the_expected_order(strategy, restart, reason):
    children = [
        ChildView("a", P, running=True),
        ChildView("b", restart, running=False),  # it just exited
        ChildView("c", TR, running=True),
        ChildView("d", TE, running=True),
    ]
    plan = plan_restart(strategy, children, "b", reason)
    if RESTARTS[(restart, reason)]:
        stop, start, remove = AFFECTED[strategy]
        assert plan == Plan(restart=True, stop=stop, start=start, remove=remove)
    else:
        # Nothing else is touched; a temporary child is forgotten, a transient one stays stopped.
        assert plan == Plan(restart=False, remove=("b",) if restart is TE else ())


def test_should_restart_matches_the_table():
    for (restart, reason), expected in RESTARTS.items():
        assert should_restart(restart, reason) is expected


def test_one_for_all_starts_a_stopped_transient_sibling_again_and_does_not_stop_it():
    # OTP: every non-temporary child is started again, even one that had exited normally.
    children = [ChildView("a", TR, running=False), ChildView("b", P, running=False), ChildView("c", P, running=True)]
    assert plan_restart(Strategy.ONE_FOR_ALL, children, "b", ExitReason.CRASH) == Plan(
        restart=True, stop=("c",), start=("a", "b", "c")
    )


def test_rest_for_one_leaves_earlier_children_alone_when_the_last_one_exits():
    children = [ChildView("a", P, True), ChildView("b", P, True), ChildView("c", P, False)]
    assert plan_restart(Strategy.REST_FOR_ONE, children, "c", ExitReason.CRASH) == Plan(restart=True, start=("c",))


def test_planning_for_an_unknown_child_is_a_key_error():
    with pytest.raises(KeyError):
        plan_restart(Strategy.ONE_FOR_ONE, [ChildView("a", P, True)], "zzz", ExitReason.CRASH)


# -- backoff ------------------------------------------------------------------------------


def test_backoff_grows_exponentially_to_its_cap_without_jitter():
    policy = BackoffPolicy(initial=0.1, factor=2, max_delay=1.0, jitter=0)
    assert [restart_delay(policy, k, 0.5) for k in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert restart_delay(policy, 10_000, 0.0) == 1.0  # no overflow in a long crash loop


def test_jitter_takes_off_at_most_its_fraction_and_is_reproducible_with_a_seed():
    policy = BackoffPolicy(initial=1.0, factor=1, max_delay=1.0, jitter=0.5)
    rng1, rng2 = random.Random(7), random.Random(7)
    a = [restart_delay(policy, 1, rng1.random()) for _ in range(200)]
    b = [restart_delay(policy, 1, rng2.random()) for _ in range(200)]
    assert a == b
    assert all(0.5 < d <= 1.0 for d in a)
    assert max(a) - min(a) > 0.3  # the jitter really spreads them


def test_failure_count_resets_after_a_stable_period():
    policy = BackoffPolicy(reset_after=10.0)
    assert consecutive_failures(policy, 3, started_at=100.0, now=105.0) == 4
    assert consecutive_failures(policy, 3, started_at=100.0, now=110.0) == 1
    assert consecutive_failures(policy, 3, started_at=None, now=500.0) == 4  # never came up: no reset


def test_restart_delay_rejects_nonsense_inputs():
    with pytest.raises(ValueError):
        restart_delay(BackoffPolicy(), 0, 0.1)
    with pytest.raises(ValueError):
        restart_delay(BackoffPolicy(), 1, 1.0)


# -- probes ----------------------------------------------------------------------------------


def _answer(running_for):
    return {"state": "running", "handler_running_for": running_for}


def test_k_missed_probes_in_a_row_make_a_child_suspect():
    policy = ProbePolicy(missed_limit=3)
    missed = 0
    verdicts = []
    for _ in range(3):
        missed, v = judge_probe(policy, missed, None)
        verdicts.append(v)
    assert verdicts == [Verdict.LATE, Verdict.LATE, Verdict.SUSPECT]


def test_an_answer_resets_the_missed_count():
    policy = ProbePolicy(missed_limit=2)
    missed, _ = judge_probe(policy, 0, None)
    missed, v = judge_probe(policy, missed, _answer(None))
    assert (missed, v) == (0, Verdict.HEALTHY)
    missed, v = judge_probe(policy, missed, None)
    assert v is Verdict.LATE


def test_a_handler_past_its_limit_is_suspect_but_a_busy_one_under_it_is_healthy():
    policy = ProbePolicy(handler_limit=2.0, action=HangAction.QUARANTINE)
    assert judge_probe(policy, 0, _answer(1.9))[1] is Verdict.HEALTHY
    assert judge_probe(policy, 0, _answer(2.1))[1] is Verdict.SUSPECT
    assert judge_probe(ProbePolicy(), 0, _answer(1e6))[1] is Verdict.HEALTHY  # no limit configured


def _degraded(since, attempts=1):
    return {"state": "running", "handler_running_for": None,
            "degraded": {"since": since, "reason": "store_full", "attempts": attempts, "errno": "ENOSPC"}}


def test_a_degraded_child_is_notified_by_default():
    assert ProbePolicy().on_degraded is DegradedAction.NOTIFY
    assert judge_degraded(ProbePolicy(), None, _degraded(10.0)) == DegradedJudgement(10.0, DegradedAction.NOTIFY)


@pytest.mark.parametrize("action", list(DegradedAction), ids=lambda a: a.value)
def test_each_degraded_episode_gets_the_policy_once_and_its_end_is_seen(action):
    policy = ProbePolicy(on_degraded=action)
    healthy = _answer(None)
    assert judge_degraded(policy, None, healthy) == DegradedJudgement(None)  # healthy: nothing
    first = judge_degraded(policy, None, _degraded(10.0))
    assert first == DegradedJudgement(10.0, action)
    # The same episode, more attempts: acted on already.
    assert judge_degraded(policy, first.known, _degraded(10.0, attempts=5)) == DegradedJudgement(10.0)
    # An unanswered probe says nothing about the store.
    assert judge_degraded(policy, first.known, None) == DegradedJudgement(10.0)
    # It clears: said once, then healthy again.
    cleared = judge_degraded(policy, first.known, healthy)
    assert cleared == DegradedJudgement(None, cleared=True)
    assert judge_degraded(policy, cleared.known, healthy) == DegradedJudgement(None)
    # A later episode is a new one.
    assert judge_degraded(policy, cleared.known, _degraded(99.0)) == DegradedJudgement(99.0, action)


def test_a_spare_or_failed_hosts_answer_without_the_field_is_not_degraded():
    answer = {"state": "spare", "pid": 1, "handler_running_for": None}
    assert judge_degraded(ProbePolicy(on_degraded=DegradedAction.RESTART), None, answer) == DegradedJudgement(None)


def test_the_degraded_policy_is_validated_data():
    assert ProbePolicy(on_degraded="quarantine").on_degraded is DegradedAction.QUARANTINE
    with pytest.raises(SpecError, match="on_degraded"):
        ProbePolicy(on_degraded="reboot")


def test_spares_are_placed_as_the_first_agent_child_and_match_only_the_same_placement():
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from supervisors._standby import placement_key, spare_placement
    from tests.agents import Counter

    node = "ab" * 28  # a node id is 28 bytes of hex

    def pinned(soft):
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=soft), "resources": {"gpu_box": 1}}

    sub = ChildSpec(id="sub", supervisor=SupervisorSpec(id="sub"))
    first = ChildSpec(id="a", agent=Counter, ray_options=pinned(False))
    other = ChildSpec(id="b", agent=Counter)
    assert spare_placement([sub, first, other]) == first.ray_options  # supervisors are skipped
    assert spare_placement([sub]) == {}
    # Built separately, alike: the same placement (Ray's strategies define no equality).
    assert placement_key(pinned(False)) == placement_key(first.ray_options)
    assert placement_key({"resources": {"gpu_box": 1}, "scheduling_strategy": pinned(False)["scheduling_strategy"]}) \
        == placement_key(pinned(False)), "key order does not matter"
    assert placement_key(pinned(True)) != placement_key(pinned(False))
    assert placement_key(other.ray_options) != placement_key(first.ray_options)
    assert placement_key({"resources": {"gpu_box": 2}}) != placement_key({"resources": {"gpu_box": 1}})
