"""Warm standby: a pre-started spare takes over a crashed agent's id, with its state.

Real SIGKILLs of the child's process; the spare is a real actor started
before the crash (its pid is known beforehand).
"""

from __future__ import annotations

import os
import signal

import pytest

from runtime import System
from supervisors import ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.sup_agents import FAST, Bump, Read, Worker, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def test_a_spare_takes_over_a_crashed_agent_with_its_state_and_is_replaced(data_dir, refs):
    a, b = uid("w"), uid("w")
    spec = SupervisorSpec(
        id=uid("sup"), flags=SupervisorFlags(intensity=5, period=10, backoff=FAST, standby=1),
        children=[ChildSpec(id=a, agent=Worker), ChildSpec(id=b, agent=Worker)],
    )
    sup = start_supervisor(spec, data_dir=data_dir, seed=1)
    refs.append(sup)
    system = System(data_dir)
    for _ in range(3):
        system.lookup(a).ask(Bump(), timeout=20)
    wait_for(lambda: sup.status()["spares"] == 1)
    spare_pids = {s["pid"] for s in sup.spares()}
    old_pid, first_epoch = sup.child(a)["pid"], sup.child(a)["epoch"]
    held = system.lookup(a)  # an operator's ref, taken before the crash
    assert held.admin.status()["pid"] == old_pid

    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: sup.child(a)["pid"] not in (None, old_pid) and sup.child(a)["state"] == "running")
    child = sup.child(a)
    assert child["pid"] in spare_pids, "the spare, started before the crash, took the agent over"
    assert child["restarts"] == 1
    assert child["epoch"] > first_epoch, "the adopted incarnation holds a newer fencing epoch"
    ref = system.lookup(a)
    assert ref.ask(Read(), timeout=20) == 3, "state restored"
    assert ref.admin.status()["restore"]["source"] == "local"
    # The ref held from before reaches the spare for operators' calls too, without an ask first.
    assert held.admin.status()["pid"] == child["pid"]
    assert ref.ask(Bump(), timeout=20) == 4
    assert system.lookup(b).ask(Read(), timeout=20) == 0, "the sibling was not touched"
    wait_for(lambda: sup.status()["spares"] == 1)  # replaced in the background
    assert a in system.agents() and not any(n.startswith("garrison-spare-") for n in system.agents())

    # The adopted host crashes too: the next spare takes over again.
    os.kill(child["pid"], signal.SIGKILL)
    wait_for(lambda: sup.child(a)["pid"] not in (None, child["pid"]) and sup.child(a)["state"] == "running")
    assert system.lookup(a).ask(Read(), timeout=20) == 4


def test_a_spare_adopts_only_a_child_placed_as_it_is(data_dir, refs):
    """Spares are placed as the first agent child asks; a child with other ``ray_options``
    (here a small memory reservation) restarts cold, where its own options place it."""
    a, b = uid("w"), uid("w")
    spec = SupervisorSpec(
        id=uid("sup"), flags=SupervisorFlags(intensity=5, period=10, backoff=FAST, standby=1),
        children=[ChildSpec(id=a, agent=Worker), ChildSpec(id=b, agent=Worker, ray_options={"memory": 1 << 20})],
    )
    sup = start_supervisor(spec, data_dir=data_dir, seed=1)
    refs.append(sup)
    system = System(data_dir)
    wait_for(lambda: sup.status()["spares"] == 1)
    spare_pids = {s["pid"] for s in sup.spares()}

    old_b = sup.child(b)["pid"]
    os.kill(old_b, signal.SIGKILL)
    wait_for(lambda: sup.child(b)["pid"] not in (None, old_b) and sup.child(b)["state"] == "running")
    assert sup.child(b)["pid"] not in spare_pids, "placed otherwise than the spare: a cold start"
    assert system.lookup(b).ask(Read(), timeout=20) == 0
    assert {s["pid"] for s in sup.spares()} == spare_pids, "the spare is still there, unused"

    old_a = sup.child(a)["pid"]
    os.kill(old_a, signal.SIGKILL)
    wait_for(lambda: sup.child(a)["pid"] not in (None, old_a) and sup.child(a)["state"] == "running")
    assert sup.child(a)["pid"] in spare_pids, "placed as the spare: it took the agent over"
