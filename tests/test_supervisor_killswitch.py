"""The kill switch on a real local Ray: per agent, per subtree, and for a whole namespace."""

from __future__ import annotations

import os
import signal

import pytest
import ray

from runtime import AgentNotRunning, System
from supervisors import (
    ChildSpec,
    JsonlNotifier,
    SpecError,
    SupervisorFlags,
    SupervisorSpec,
    halt,
    start_supervisor,
)
from tests.agents import Emit, GetItems, Producer, Report, Sink
from tests.sup_agents import FAST, Bump, Read, Worker, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def test_halting_an_agent_stops_handlers_and_outgoing_messages_checkpoints_and_notifies(data_dir, refs):
    prod, sink = uid("prod"), uid("sink")
    small = {"max_batch": 5, "window": 5}
    log = JsonlNotifier(data_dir / "events.jsonl")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST), children=[
        ChildSpec(id=sink, agent=Sink, init={"delay": 0.02}),
        ChildSpec(id=prod, agent=Producer, config=small),
    ])
    sup = start_supervisor(spec, data_dir=data_dir, notifiers=[log])
    refs.append(sup)
    system = System(data_dir)
    producer, receiver = system.lookup(prod), system.lookup(sink)
    assert producer.ask(Emit(to=sink, start=0, count=400), timeout=20) == 400  # staged; flows at ~50/s
    wait_for(lambda: receiver.ask(Report(), timeout=20)["count"] >= 10)

    result = halt("alice@ops", "runaway producer", agent=prod, supervisor=spec.id)
    status = result[f"{spec.id}/{prod}"]["halted"][prod]
    assert status["state"] == "halted"
    assert status["last_checkpoint_seq"] == status["seq"]  # final checkpoint covers every commit
    # What had left before the halt: acknowledged, or sent and not yet answered (at most one window).
    left = status["delivered"] + status["outbox_in_memory"]
    assert status["outbox_in_memory"] <= small["window"] * small["max_batch"]
    assert sum(status["outbox_pending"].values()) == 400 - status["delivered"] > status["outbox_in_memory"]
    # The window in flight lands (an event, not a pause) ...
    wait_for(lambda: receiver.ask(Report(), timeout=20)["count"] >= left)
    assert receiver.ask(GetItems(), timeout=20) == list(range(left))  # ... and nothing beyond it (checked
    # again below, after the kill switch's notification and the producer's death: whatever else had left
    # would have landed by then)

    with pytest.raises(AgentNotRunning) as info:
        producer.ask(Report(), timeout=20)  # no handler runs
    assert "HALTED" in str(info.value) and "alice@ops" in str(info.value)

    events = wait_for(lambda: [e for e in log.read() if e["kind"] == "halted"])
    assert (events[0]["who"], events[0]["why"], events[0]["child"]) == ("alice@ops", "runaway producer", prod)
    assert events[0]["alert"]

    # A halted child is never restarted behind the operator's back, even if its process dies.
    os.kill(sup.child(prod)["pid"], signal.SIGKILL)
    # The supervisor decides in the same step that records the exit (a restart would show as
    # "restarting" at once, FAST backoff has no delay): the first look after the crash is the decision.
    c = sup.wait_until(lambda s: (c := s.child(prod))["last_exit"] == "crash" and c)
    assert (c["state"], c["restarts"], c["pid"]) == ("halted", 0, None)
    assert not [e for e in sup.events() if e.get("child") == prod and e["kind"] in ("restarting", "restarted")]
    assert sup.child(sink)["state"] == "running"  # the sibling is untouched
    assert receiver.ask(GetItems(), timeout=20) == list(range(left)), "nothing more left the halted producer"


def test_halting_a_subtree_halts_nested_supervisors_and_their_agents(data_dir, refs):
    leaf, other, sub_id = uid("leaf"), uid("other"), uid("sub")
    sub = SupervisorSpec(id=sub_id, children=[ChildSpec(id=leaf, agent=Worker)])
    root = SupervisorSpec(id=uid("root"), children=[ChildSpec(id=other, agent=Worker),
                                                      ChildSpec(id=sub_id, supervisor=sub)])
    sup = start_supervisor(root, data_dir=data_dir)
    refs.append(sup)
    System(data_dir).lookup(leaf).ask(Bump(n=9), timeout=20)
    halt("bob", "bad deploy", supervisor=root.id)
    assert sup.status()["state"] == "halted"
    assert [c["state"] for c in sup.which_children()] == ["halted", "halted"]
    for agent_id in (leaf, other):
        host = ray.get_actor(agent_id, namespace="garrison")
        assert ray.get(host.probe.remote())["state"] == "halted"
    sub_status = ray.get(ray.get_actor(sub_id, namespace="garrison").status.remote())
    assert sub_status["state"] == "halted"
    # State was preserved, and so was the halt: a new incarnation starts
    # halted, and once an operator lifts the switch it resumes from the state.
    sup.stop(kill=True)
    refs.clear()
    system = System(data_dir)
    try:
        ref = system.spawn(Worker, leaf, detached=False)
        assert ref.admin.status()["state"] == "halted"
        ref.admin.unhalt("bob")
        assert ref.ask(Read(), timeout=20) == 9
    finally:
        system.stop(leaf)


def test_the_global_switch_halts_everything_in_its_namespace_only(data_dir, refs):
    ns = uid("ks")
    a, b = uid("a"), uid("b")
    spec = SupervisorSpec(id=uid("sup"), children=[ChildSpec(id=a, agent=Worker), ChildSpec(id=b, agent=Worker)])
    sup = start_supervisor(spec, data_dir=data_dir, namespace=ns)
    refs.append(sup)
    bystander = uid("bystander")
    system = System(data_dir)
    system.spawn(Worker, bystander, detached=False)  # in the default namespace: must not be touched
    try:
        log = JsonlNotifier(data_dir / "global.jsonl")
        results = halt("carol", "incident 4312", everything=True, namespace=ns, notifiers=[log])
        assert set(results) == {spec.id, a, b}
        for agent_id in (a, b):
            assert ray.get(ray.get_actor(agent_id, namespace=ns).probe.remote())["state"] == "halted"
        assert system.lookup(bystander).ask(Bump(), timeout=20) == 1
        event = log.read()[0]
        assert (event["kind"], event["who"], event["why"]) == ("halted", "carol", "incident 4312")
    finally:
        system.stop(bystander)


def test_a_kill_switch_needs_who_why_and_exactly_one_target(ray_session):
    with pytest.raises(SpecError):
        halt("", "why", agent="x")
    with pytest.raises(SpecError):
        halt("me", "why")
    with pytest.raises(SpecError):
        halt("me", "why", agent="x", everything=True)
