"""Hang detection on a real local Ray: stuck handlers and stuck processes, busy-but-healthy agents."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import ray

from runtime import AgentNotRunning, System
from supervisors import (
    ChildSpec,
    HangAction,
    JsonlNotifier,
    ProbePolicy,
    SupervisorFlags,
    SupervisorSpec,
    start_supervisor,
)
from tests.sup_agents import FAST, Bump, Read, Spin, Work, Worker, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def _one_child(data_dir, refs, probe, **kw):
    wid = uid("w")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST),
                          children=[ChildSpec(id=wid, agent=Worker, probe=probe)])
    sup = start_supervisor(spec, data_dir=data_dir, **kw)
    refs.append(sup)
    return sup, wid


def _suspects(sup):
    return [e for e in sup.events() if e["kind"] == "suspect"]


def test_a_handler_looping_forever_is_detected_within_budget_and_restarted(data_dir, refs):
    probe = ProbePolicy(interval=0.2, timeout=1.0, missed_limit=3, handler_limit=1.0)
    sup, wid = _one_child(data_dir, refs, probe)
    agent = System(data_dir).lookup(wid)
    assert agent.ask(Bump(n=2), timeout=20) == 2
    pid = sup.child(wid)["pid"]
    t0 = time.monotonic()
    agent.tell(Spin())  # never returns
    sup.wait_until(lambda s: _suspects(s), timeout=20, interval=0.05)
    detected = time.monotonic() - t0
    budget = probe.handler_limit + probe.interval + probe.timeout  # worst case: limit, one interval, one probe
    assert detected < budget + 2.0, f"detected after {detected:.2f}s, budget {budget:.2f}s"
    assert "handler has been running for" in _suspects(sup)[0]["why"]
    sup.wait_until(lambda s: s.child(wid)["state"] == "running" and s.child(wid)["restarts"] == 1, timeout=30)
    c = sup.child(wid)
    assert c["pid"] != pid and c["last_exit"] == "hung"
    assert System(data_dir).lookup(wid).ask(Read(), timeout=20) == 2  # state survived the restart


def test_a_busy_agent_under_its_limit_is_not_flagged(data_dir, refs):
    probe = ProbePolicy(interval=0.2, timeout=1.0, missed_limit=2, handler_limit=4.0)
    sup, wid = _one_child(data_dir, refs, probe)
    pid = sup.child(wid)["pid"]
    agent = System(data_dir).lookup(wid)
    assert agent.ask(Work(seconds=2.5), timeout=20) == 2.5  # about 12 probes answered meanwhile
    c = sup.child(wid)
    assert (c["state"], c["pid"], c["restarts"]) == ("running", pid, 0)
    # Probes are judged in the order they were sent, and one suspect ends the prober of an
    # incarnation: a handler now stuck past the limit is flagged by a later probe, so by its
    # flag every probe of the busy stretch had been judged, and none of them was a suspect.
    agent.tell(Spin(seconds=None))
    suspects = sup.wait_until(lambda s: _suspects(s), timeout=30, interval=0.05)
    assert len(suspects) == 1, suspects
    running = re.fullmatch(r"a handler has been running for ([\d.]+)s \(limit 4.0s\)", suspects[0]["why"])
    assert running and float(running[1]) > probe.handler_limit, suspects  # the spin, not the work
    before = [e for e in sup.events() if e["index"] < suspects[0]["index"] and e.get("child") == wid]
    assert not [e for e in before if e["kind"] in ("exited", "restarting", "restarted")], before


def test_a_frozen_process_misses_k_probes_and_is_restarted(data_dir, refs):
    probe = ProbePolicy(interval=0.2, timeout=0.5, missed_limit=3)
    sup, wid = _one_child(data_dir, refs, probe)
    pid = sup.child(wid)["pid"]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # alive but answering nothing, not even probes
    try:
        sup.wait_until(lambda s: _suspects(s), timeout=20, interval=0.05)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    detected = time.monotonic() - t0
    budget = probe.missed_limit * (probe.interval + probe.timeout)
    assert detected < budget + 2.0, f"detected after {detected:.2f}s, budget {budget:.2f}s"
    assert "3 probes in a row unanswered" in _suspects(sup)[0]["why"]
    sup.wait_until(lambda s: s.child(wid)["state"] == "running" and s.child(wid)["restarts"] == 1, timeout=30)
    assert sup.child(wid)["pid"] != pid


def test_quarantine_policy_keeps_the_hung_agent_alive_refusing_messages_until_released(data_dir, refs):
    probe = ProbePolicy(interval=0.2, timeout=1.0, handler_limit=0.8, action=HangAction.QUARANTINE)
    log = JsonlNotifier(data_dir / "alerts.jsonl", alerts_only=True)
    sup, wid = _one_child(data_dir, refs, probe, notifiers=[log])
    agent = System(data_dir).lookup(wid)
    agent.ask(Bump(n=3), timeout=20)
    pid = sup.child(wid)["pid"]
    agent.tell(Spin(seconds=3.0))  # stuck long enough to be judged; then it finishes
    sup.wait_until(lambda s: s.child(wid)["state"] == "quarantined", timeout=20, interval=0.05)
    c = sup.child(wid)
    assert c["pid"] == pid and c["restarts"] == 0  # not restarted: kept for investigation
    host = ray.get_actor(wid, namespace="garrison")
    # The supervisor marks the child before it tells the agent: wait for the agent to have it.
    wait_for(lambda: ray.get(host.probe.remote())["state"] == "quarantined", timeout=30)
    with pytest.raises(AgentNotRunning):
        agent.ask(Read(), timeout=20)  # queued behind the spin, then refused
    # Notified off the event loop.
    wait_for(lambda: {"suspect", "quarantined"} <= {e["kind"] for e in log.read()}, timeout=30, describe=log.read)
    sup.release(wid)
    assert sup.child(wid)["state"] == "running"
    assert agent.ask(Read(), timeout=20) == 3


def test_an_operator_quarantines_then_retires_a_child_and_its_state_is_kept(data_dir, refs):
    sup, wid = _one_child(data_dir, refs, None)
    agent = System(data_dir).lookup(wid)
    agent.ask(Bump(n=6), timeout=20)
    sup.quarantine(wid, who="dave", why="odd replies")
    assert sup.child(wid)["state"] == "quarantined"
    with pytest.raises(AgentNotRunning):
        agent.ask(Read(), timeout=20)
    os.kill(sup.child(wid)["pid"], signal.SIGKILL)  # a quarantined child is not restarted either
    sup.wait_until(lambda s: s.child(wid)["last_exit"] == "crash")
    assert sup.child(wid)["state"] == "quarantined" and sup.child(wid)["restarts"] == 0
    sup.retire(wid, who="dave", why="replaced by v2")
    assert sup.which_children() == []
    assert [e["who"] for e in sup.events() if e["kind"] == "retired"] == ["dave"]
    system = System(data_dir)
    try:  # its state outlived it, and so did its quarantine, until an operator lifts it
        ref = system.spawn(Worker, wid, detached=False)
        assert ref.admin.status()["state"] == "quarantined"
        ref.admin.release("dave", "v2 reviewed the state")
        assert ref.ask(Read(), timeout=20) == 6
    finally:
        system.stop(wid)
