"""Deadlines propagate down a chain of asks; expiry is typed and says where."""

from __future__ import annotations

import time

import pytest

from protocols import DeadlineExpired
from runtime import AskTimeout
from runtime._ref import DEADLINE_GRACE

from .agents import Add, Chain, Counter, GetCount, Hop, Report, Sleep
from .waiting import wait_for

pytestmark = pytest.mark.ray


def test_expiry_in_the_middle_of_a_chain_reaches_the_caller_first(system, agent_id):
    c = system.spawn(Chain, f"{agent_id}-c")
    # b spends longer than the whole budget before it forwards: the deadline
    # expires while b works, and b's ask to c is refused before it is sent.
    b = system.spawn(Chain, f"{agent_id}-b", init={"next": c.agent_id, "delay": 0.7})
    a = system.spawn(Chain, f"{agent_id}-a", init={"next": b.agent_id})
    assert a.ask(Hop(), timeout=5) == c.agent_id  # the chain works with enough budget
    t0 = time.monotonic()
    with pytest.raises(DeadlineExpired) as err:
        a.ask(Hop(), timeout=0.6)
    took = time.monotonic() - t0
    assert f"{agent_id}-b" in err.value.details["where"] and f"{agent_id}-c" in err.value.details["where"]
    assert took < 0.6 + DEADLINE_GRACE, "the typed error came back before the caller's own timeout"
    assert c.ask(Report()) == {"handled": 1}, "nothing was handled after the deadline"
    assert a.ask(Report()) == {"handled": 1} and b.ask(Report()) == {"handled": 1}, "failed handlers rolled back"


def test_a_late_reply_never_answers_a_later_ask(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    with pytest.raises(AskTimeout):
        ref.ask(Sleep(seconds=1.0), timeout=0.2)
    assert ref.ask(Add(n=5), timeout=10) == 5, "the next ask gets its own reply, not the late 1.0"
    assert ref.ask(GetCount()) == 5


def test_expired_tell_is_not_handled_and_becomes_a_dead_letter(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    ref.tell(Add(n=1), timeout=-1)
    letters = wait_for(lambda: ref.admin.dead_letters(reason="expired"), timeout=30)
    assert letters[0]["type"] == "test.add@1"
    assert ref.ask(GetCount()) == 0
