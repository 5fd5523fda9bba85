"""An ask from a handler to what would have to answer it on the same thread is refused at once (``AskDeadlock``).

Real Ray, one-actor and packed agents (tests/selfwait_agents.py).  Without the check each of these
asks waited out its whole deadline (20 s here) and failed as an ``AskTimeout``.
"""

from __future__ import annotations

import pytest

from runtime import AskDeadlock
from runtime._packing import lane_of

from .packed_agents import end_packed_hosts
from .selfwait_agents import Asked, Asker, AskPeer, AskPeerAsync, PackedAsker, Ping


def _refused(ref, msg) -> AskDeadlock:
    with pytest.raises(AskDeadlock) as caught:
        ref.ask(msg, timeout=60)
    return caught.value


@pytest.mark.parametrize("message", [AskPeer, AskPeerAsync])
def test_an_agent_asking_itself_from_a_handler_is_refused_at_once_and_keeps_going(system, agent_id, message):
    ref = system.spawn(Asker, agent_id)
    exc = _refused(ref, message(to=agent_id))
    assert exc.details == {"agent_id": agent_id, "recipient": agent_id, "lane": None}
    assert "asked itself" in exc.message
    assert ref.ask(Ping(), timeout=30) == 1, "the agent goes on; the refused ask was never delivered"
    assert ref.ask(Asked(), timeout=30) is None, "the failed handler's change was rolled back"


def test_an_ask_to_another_agent_from_a_handler_still_goes(system, agent_id):
    first, second = system.spawn(Asker, f"{agent_id}-a"), system.spawn(Asker, f"{agent_id}-b")
    assert first.ask(AskPeer(to=second.agent_id), timeout=30) == 1
    assert first.ask(AskPeerAsync(to=second.agent_id), timeout=30) == 2


def _ids_by_lane(prefix: str) -> tuple[str, str, str]:
    """Two ids on one lane of a packed host, and a third on another lane."""
    by_lane: dict[str, list[str]] = {}
    for i in range(500):
        candidate = f"{prefix}-{i}"
        by_lane.setdefault(lane_of(candidate), []).append(candidate)
        shared = [ids for ids in by_lane.values() if len(ids) >= 2]
        if shared and len(by_lane) >= 2:
            a, b = shared[0][:2]
            return a, b, next(ids[0] for lane, ids in by_lane.items() if lane != lane_of(a))
    raise AssertionError("no two ids share a lane")


@pytest.fixture
def packed_host_gone(ray_session):
    yield
    end_packed_hosts("test-selfwait")


def test_a_packed_agent_asking_one_on_its_own_lane_is_refused_and_one_on_another_lane_answers(
        system, agent_id, packed_host_gone):
    a, b, c = _ids_by_lane(agent_id)
    assert lane_of(a) == lane_of(b) != lane_of(c)
    refs = {x: system.spawn(PackedAsker, x) for x in (a, b, c)}
    for message in (AskPeer, AskPeerAsync):
        exc = _refused(refs[a], message(to=b))
        assert exc.details == {"agent_id": a, "recipient": b, "lane": lane_of(a)}, exc.details
        assert _refused(refs[a], message(to=a)).details["lane"] is None, "itself: refused as any agent is"
    assert refs[a].ask(AskPeer(to=c), timeout=30) == 1, "another lane of the same host answers"
    assert refs[a].ask(AskPeerAsync(to=c), timeout=30) == 2
    assert refs[b].ask(Ping(), timeout=30) == 1, "the agent on the shared lane was never asked"
    assert refs[a].ask(Asked(), timeout=30) == c
