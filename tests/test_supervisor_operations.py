"""The Operators on their own: fake children (handles answering halt, unhalt, quarantine, release), a fake port.

No Ray, no actor: what an operator's call asks of the supervisor is read
from the port's record, what it tells a child from the handle's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from supervisors import ChildState, ProbePolicy, SupervisorError, SupervisorSpec, SupervisorState
from supervisors._operations import Operators
from tests.supervisor_fakes import FakeHandle, FakePort, running_child


class FakeProber:
    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []

    def start(self, child: Any, gen: int) -> None:
        self.started.append((child.id, gen))


def agent_handle(unhalt_state: str = "running") -> FakeHandle:
    return FakeHandle(
        "agent",
        halt=lambda who, why: {"state": "halted", "who": who},
        unhalt=lambda who, why: {"state": unhalt_state},
        quarantine=lambda why, who: {"state": "quarantined"},
        release=lambda who, why: {"state": "running"},
    )


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


def setup(*ids: str, **handle_kw: Any) -> tuple[FakePort, FakeProber, Operators, list[Any]]:
    children = [running_child(i, agent_handle(**handle_kw), probe=ProbePolicy()) for i in ids]
    port, prober = FakePort(children=children), FakeProber()
    return port, prober, Operators("sup", port.port(), prober), children  # type: ignore[arg-type]


def test_the_kill_switch_on_the_subtree_halts_the_supervisor_and_every_child_and_stops_their_probers():
    async def go() -> None:
        port, _, ops, children = setup("a", "b")
        for c in children:  # the monitor, then the prober
            c.tasks = [asyncio.ensure_future(_forever()), asyncio.ensure_future(_forever())]
        probers = [c.tasks[1] for c in children]
        result = await ops.halt("alice", "runaway")
        assert port.calls == [("halt_subtree",)]
        assert result == {"supervisor": "sup", "state": "halted",
                          "halted": {"a": {"state": "halted", "who": "alice"}, "b": {"state": "halted", "who": "alice"}}}
        assert all(c.state is ChildState.HALTED and len(c.tasks) == 1 for c in children)
        assert [c.handle.halt.calls for c in children] == [[("alice", "runaway")]] * 2
        await asyncio.gather(*probers, return_exceptions=True)
        assert all(t.cancelled() for t in probers) and not any(c.tasks[0].done() for c in children)
        assert port.events == [("halted", None, "alice", "runaway")]
        for c in children:
            c.tasks[0].cancel()

    asyncio.run(go())


def test_a_kill_switch_holds_for_a_child_started_later_until_the_subtree_is_unhalted():
    async def go() -> None:
        port, prober, ops, (a, late) = setup("a", "late")
        assert not await ops.reapply_halt(late), "no kill switch pulled: nothing to reapply"
        await ops.halt("alice", "runaway", child="a")
        assert port.calls == [], "one child's kill switch leaves the supervisor as it is"
        assert not await ops.reapply_halt(late), "and holds for that child only"
        await ops.halt("erin", "everything stops")
        assert port.calls == [("halt_subtree",)]
        assert await ops.reapply_halt(late)
        assert late.state is ChildState.HALTED and late.handle.halt.calls[-1] == ("erin", "everything stops")
        port.state = SupervisorState.HALTED
        result = await ops.unhalt("bob", "fixed")
        assert port.calls[-1] == ("lift_halt",)
        assert result["unhalted"] == {"a": {"state": "running"}, "late": {"state": "running"}}
        assert prober.started == [("a", 1), ("late", 1)], "probed again"
        assert not await ops.reapply_halt(late), "lifted"

    asyncio.run(go())


def test_an_agent_halted_while_quarantined_goes_back_to_its_quarantine_unprobed():
    async def go() -> None:
        port, prober, ops, (a,) = setup("a", unhalt_state="quarantined")
        await ops.halt("alice", "why", child="a")
        await ops.unhalt("bob", "ok", child="a")
        assert a.state is ChildState.QUARANTINED and prober.started == []

    asyncio.run(go())


def test_a_halted_child_whose_process_died_is_started_again_through_the_supervisor():
    async def go() -> None:
        port, _, ops, (a,) = setup("a")
        await ops.halt("alice", "why", child="a")
        a.handle = None  # died while halted
        result = await ops.unhalt("bob", "ok", child="a")
        assert port.calls == [("start_child", "a")], "started again, under the supervisor's restart lock"
        assert result["unhalted"]["a"]["id"] == "a"

    asyncio.run(go())


def test_halting_a_child_that_does_not_exist_records_nothing_and_each_child_keeps_its_own_who():
    async def go() -> None:
        port, _, ops, (a, b) = setup("a", "b")
        with pytest.raises(KeyError):  # the fake port's ChildNotFound
            await ops.halt("mallory", "typo", child="nope")
        await ops.halt("alice", "runaway spend", child="a")
        await ops.halt("bob", "odd replies", child="b")
        # Both restarted while halted (their processes died): each comes back halted by its own operator.
        for c in (a, b):
            assert await ops.reapply_halt(c)
        assert a.handle.halt.calls[-1] == ("alice", "runaway spend")
        assert b.handle.halt.calls[-1] == ("bob", "odd replies")
        await ops.unhalt("carol", "checked", child="a")
        a.state = ChildState.HALTED  # as if its restart raced the unhalt
        assert not await ops.reapply_halt(a), "a lifted halt is not applied again"
        assert port.events[0][:3] == ("halted", "a", "alice")

    asyncio.run(go())


def test_unhalting_or_releasing_a_child_in_another_state_is_refused():
    async def go() -> None:
        port, _, ops, _ = setup("a")
        with pytest.raises(SupervisorError, match="is RUNNING, not HALTED"):
            await ops.unhalt("bob", "", child="a")
        with pytest.raises(SupervisorError, match="is RUNNING, not QUARANTINED"):
            await ops.release("a", "bob", "")
        assert port.calls == [] and port.events == []

    asyncio.run(go())


def test_a_quarantine_by_hand_is_recorded_with_who_and_the_agent_told():
    async def go() -> None:
        port, prober, ops, (a,) = setup("a")
        described = await ops.quarantine("a", "carol", "looks odd", "ed25519:0c0a0r01")
        assert a.state is ChildState.QUARANTINED and described["last_failure"] == "looks odd (by carol)"
        assert a.handle.quarantine.calls == [("looks odd", "carol")]
        assert a.handle.quarantine.keywords == [{"auth": "ed25519:0c0a0r01"}], "how carol was established, passed on"
        assert port.events == [("quarantined", "a", "carol", "looks odd")]
        await ops.release("a", "dave", "fine")
        assert a.state is ChildState.RUNNING and a.handle.release.calls == [("dave", "fine")]
        assert a.handle.release.keywords == [{"auth": "runtime"}]
        assert prober.started == [("a", 1)], "probed again once released"

    asyncio.run(go())


def test_a_nested_supervisor_is_not_quarantined_by_hand_and_one_its_prober_marked_is_released_in_place():
    async def go() -> None:
        sub = FakeHandle("supervisor", quarantine=lambda child, who, why: {}, release=lambda child, who, why: {})
        child = running_child("sub", sub, probe=ProbePolicy())
        child.spec = child.spec.model_copy(update={"agent": None, "supervisor": SupervisorSpec(id="sub")})
        port, prober = FakePort(children=[child]), FakeProber()
        ops = Operators("sup", port.port(), prober)  # type: ignore[arg-type]
        with pytest.raises(SupervisorError, match="is a supervisor: quarantine its agents through it"):
            await ops.quarantine("sub", "carol", "looks odd")
        assert child.state is ChildState.RUNNING and port.events == []
        await ops.quarantine_child(child, "hung: 3 probes unanswered")  # what its prober does
        assert child.state is ChildState.QUARANTINED and sub.quarantine.calls == []
        await ops.release("sub", "dave", "it answers again")
        assert child.state is ChildState.RUNNING and sub.release.calls == []
        assert prober.started == [("sub", 1)]

    asyncio.run(go())


def test_the_supervisors_own_quarantine_is_lifted_through_the_supervisor():
    async def go() -> None:
        port, _, ops, _ = setup("a")
        port.state = SupervisorState.QUARANTINED
        status = await ops.release(None, "dave", "fine")
        assert port.calls == [("release_subtree",)] and status == {"state": "running"}
        assert port.events == [("released", None, "dave", "fine")]

    asyncio.run(go())


def test_a_retired_child_is_stopped_and_forgotten_through_the_supervisor():
    async def go() -> None:
        port, _, ops, _ = setup("a", "b")
        await ops.retire("a", "erin", "done")
        assert port.calls == [("replace_child", "a", "retired by erin: done", None)]
        assert list(port.children) == ["b"]
        assert port.events == [("retired", "a", "erin", "done")]

    asyncio.run(go())
