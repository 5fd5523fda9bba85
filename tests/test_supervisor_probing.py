"""The Prober on its own: fake child handles answer what each test says, a fake port records what it asks.

No Ray, no actor.  The probes' pacing is injected: each of the prober's sleeps
is one tick, and after ``n`` ticks the child is no longer RUNNING, so the
prober sends exactly ``n`` probes, judges each in order, and ends; a test
awaits the prober's task, then reads what it asked of the supervisor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import RayActorError

from supervisors import DegradedAction, ExitReason, HangAction, ProbePolicy
from supervisors._lifecycle import ChildState
from supervisors._probing import Prober
from tests.supervisor_fakes import FakeHandle, FakePort, running_child

OK = {"state": "running", "pid": 1, "handler_running_for": None}
#: The process died: the probe gets no answer.
DEAD = "dead"


def degraded(since: float) -> dict[str, Any]:
    info = {"since": since, "reason": "enospc", "errno": "ENOSPC", "attempts": 3, "last_error": "disk full"}
    return {**OK, "degraded": info}


async def _dead() -> None:
    raise RayActorError()


def prober_handle(script: list[Any]) -> FakeHandle:
    """The n-th probe answers ``script[n]``: an answer, DEAD, a future (answers when resolved), or a callable
    (called at the probe, returning one of those)."""
    answers = iter(script)

    def probe() -> Any:
        answer = next(answers)
        if callable(answer):
            answer = answer()
        if answer == DEAD:
            return _dead()
        return answer

    return FakeHandle("agent", probe=probe)


class Ticks:
    """The prober's sleep: one tick per probe; after ``n`` ticks the child stops RUNNING (no more probes)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.child: Any = None

    async def sleep(self, seconds: float) -> None:
        self.count += 1
        if self.count > self.n:
            self.child.state = ChildState.STOPPED
        await asyncio.sleep(0)  # a tick yields to the probes and the judge; it never waits


async def probe(script: list[Any], policy: ProbePolicy, port: FakePort | None = None) -> tuple[FakePort, Any]:
    """Run one prober over ``script`` to its end; the port and the child's handle."""
    port = port or FakePort()
    handle = prober_handle(script)
    child = running_child("a", handle, probe=policy)
    ticks = Ticks(len(script))
    ticks.child = child
    Prober(port.port(), sleep=ticks.sleep).start(child, child.generation)
    assert child.tasks == port.tasks, "the prober is one of the incarnation's tasks"
    await asyncio.wait_for(port.tasks[0], 10)
    return port, handle


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_missed_probes_in_a_row_make_the_child_suspect_and_it_is_killed_and_restarted_as_hung():
    port, handle = run(probe([OK, DEAD, DEAD, DEAD, OK, OK], ProbePolicy(missed_limit=3)))
    assert port.calls == [("kill_and_exit", "a", ExitReason.HUNG, "hung: 3 probes in a row unanswered within 1.0s")]
    assert port.kinds() == ["suspect"]
    assert port.events[0][3] == "3 probes in a row unanswered within 1.0s"


def test_an_answer_resets_the_count_of_missed_probes():
    port, handle = run(probe([DEAD, DEAD, OK, DEAD, DEAD, OK], ProbePolicy(missed_limit=3)))
    assert len(handle.probe.calls) == 6, "every probe was sent and judged"
    assert port.calls == [] and port.events == [], "never three in a row: nothing done"


def test_a_busy_child_within_the_handler_limit_is_healthy_and_one_past_it_is_suspect():
    busy = {**OK, "handler_running_for": 1.5}
    stuck = {**OK, "handler_running_for": 2.5}
    port, _ = run(probe([busy, busy, stuck, OK], ProbePolicy(handler_limit=2.0)))
    assert port.calls == [("kill_and_exit", "a", ExitReason.HUNG,
                           "hung: a handler has been running for 2.50s (limit 2.0s)")]


def test_a_suspect_child_under_the_quarantine_policy_is_quarantined_not_killed():
    port, _ = run(probe([DEAD, DEAD, DEAD], ProbePolicy(missed_limit=3, action=HangAction.QUARANTINE)))
    assert port.calls == [("quarantine_child", "a", "hung: 3 probes in a row unanswered within 1.0s")]
    assert port.kinds() == ["suspect", "quarantined"]


def test_a_probe_unanswered_within_its_timeout_counts_as_missed():
    never = asyncio.Future  # a probe that never answers (made on the test's loop, at the probe)
    port, _ = run(probe([never], ProbePolicy(missed_limit=1, timeout=0.01)))
    assert port.calls == [("kill_and_exit", "a", ExitReason.HUNG,
                           "hung: 1 probes in a row unanswered within 0.01s")]


def test_the_prober_of_a_replaced_incarnation_reports_nothing():
    child_box: list[Any] = []

    def replaced_then_dead() -> str:
        child_box[0].generation += 1  # the supervisor replaced the incarnation meanwhile
        return DEAD

    port = FakePort()
    handle = prober_handle([DEAD, DEAD, replaced_then_dead, DEAD])
    child = running_child("a", handle, probe=ProbePolicy(missed_limit=3))
    child_box.append(child)
    ticks = Ticks(4)
    ticks.child = child

    async def go() -> None:
        Prober(port.port(), sleep=ticks.sleep).start(child, 1)
        await asyncio.wait_for(port.tasks[0], 10)

    run(go())
    assert port.calls == [] and port.events == [], "the third miss belongs to a replaced incarnation"


def test_when_the_prober_ends_its_pending_probes_are_cancelled():
    cancelled: list[int] = []
    late: list[asyncio.Future[Any]] = []

    def first() -> asyncio.Future[Any]:
        late.append(asyncio.get_running_loop().create_future())
        return late[-1]

    def hanging(n: int) -> Any:
        async def hang() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                cancelled.append(n)
                raise
        return hang

    def fifth() -> Any:
        for f in late:  # the first three answer (none: the process died) once the fourth and fifth are out
            f.set_exception(RayActorError())
        return hanging(5)()

    async def go() -> FakePort:
        # The probes' own deadline (60 s) is far: only the prober's ending cancels them within the test's 10 s.
        policy = ProbePolicy(missed_limit=3, timeout=60.0)
        port, _ = await probe([first, first, first, lambda: hanging(4)(), fifth], policy)
        while len(cancelled) < 2:  # the cancellations run on the loop's next turns
            await asyncio.sleep(0)
        return port

    port = run(asyncio.wait_for(go(), 10))
    assert port.calls == [("kill_and_exit", "a", ExitReason.HUNG, "hung: 3 probes in a row unanswered within 60.0s")]
    assert sorted(cancelled) == [4, 5]


def test_a_degraded_child_under_the_restart_policy_is_alerted_on_then_killed_and_restarted_as_degraded():
    port, _ = run(probe([OK, degraded(5.0), OK], ProbePolicy(on_degraded=DegradedAction.RESTART)))
    why = "checkpoint store failing (enospc, ENOSPC) for 3 attempt(s): disk full"
    assert port.kinds() == ["degraded"]
    assert port.calls == [("kill_and_exit", "a", ExitReason.DEGRADED, f"degraded: {why}")]


def test_a_degraded_child_under_the_quarantine_policy_is_quarantined():
    port, _ = run(probe([degraded(5.0)], ProbePolicy(on_degraded=DegradedAction.QUARANTINE)))
    assert port.kinds() == ["degraded", "quarantined"]
    assert [c[0] for c in port.calls] == ["quarantine_child"]
    assert port.calls[0][2].startswith("degraded: checkpoint store failing")


def test_each_degraded_episode_is_notified_once_and_its_recovery_too():
    script = [degraded(5.0), degraded(5.0), OK, OK, degraded(9.0), degraded(9.0)]
    port, handle = run(probe(script, ProbePolicy(on_degraded=DegradedAction.NOTIFY)))
    assert port.kinds() == ["degraded", "recovered", "degraded"]
    assert port.calls == [], "notify only: the child keeps running"
    assert len(handle.probe.calls) == 6


def test_an_ignored_degraded_episode_is_neither_notified_nor_its_recovery():
    port, _ = run(probe([degraded(5.0), OK], ProbePolicy(on_degraded=DegradedAction.IGNORE)))
    assert port.events == [] and port.calls == []


def test_a_child_without_a_probe_policy_gets_no_prober():
    port = FakePort()
    child = running_child("a", prober_handle([]))

    async def go() -> None:
        Prober(port.port()).start(child, 1)

    run(go())
    assert child.tasks == [] and port.tasks == []


def tripped(count: int, *breakers: str, on_trip: str = "notify") -> dict[str, Any]:
    """A probe answer counting ``count`` trips, the newest of them those of ``breakers``."""
    recent = [{"breaker": b, "why": "consecutive_failures (3 in a row)", "at": 1.0} for b in breakers]
    return {**OK, "breaker_trips": {"count": count, "recent": recent, "on_trip": on_trip}}


def test_each_probe_that_sees_new_breaker_trips_is_one_alert_naming_them_and_the_child_keeps_running():
    script = [OK, tripped(1, "refund"), tripped(1, "refund"), tripped(3, "refund", "agent", "ship"), DEAD,
              tripped(3, "refund", "agent", "ship")]
    port, _ = run(probe(script, ProbePolicy(missed_limit=5)))
    assert port.kinds() == ["breaker_tripped", "breaker_tripped"]
    assert {e[2] for e in port.events} == {"breaker"}
    first, second = (e[3] for e in port.events)
    assert first == "refund breaker opened: consecutive_failures (3 in a row)"
    assert second == ("agent breaker opened: consecutive_failures (3 in a row); "
                      "ship breaker opened: consecutive_failures (3 in a row)")
    assert port.calls == [], "an alert only: the agent applies its own on_trip"


def test_more_trips_than_the_agent_keeps_are_counted_and_a_halt_is_said():
    port, _ = run(probe([tripped(12, "agent", on_trip="halt")], ProbePolicy()))
    assert port.events[0][3] == ("agent breaker opened: consecutive_failures (3 in a row) (and 11 earlier trips); "
                                 "the agent pulled its kill switch")
