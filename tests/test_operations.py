"""Operators' actions on an agent last and say who: quarantine, release, halt, unhalt.

Cores run in-process (no Ray) for the durable records: a quarantine is in the
agent's state, so a new incarnation (same node after a crash, or another node
through the checkpoint store) comes back QUARANTINED until released; each
action leaves a record (who, why, when) in the agent's operator log.  The last
test does it with a real Ray actor, SIGKILLed and restarted by Ray.
"""

from __future__ import annotations

import os
import signal

import pytest

from protocols import encode_envelope, error_from_wire, make_envelope
from runtime import AgentNotRunning, AgentState, AgentUnavailable, _operations
from runtime._core import AgentCore
from runtime._reply import decode_reply
from runtime._spec import HostSpec

from .agents import Add, Counter, GetCount
from .waiting import wait_for


def _spec(tmp_path, node: str = "node-a", agent: str = "op-1") -> HostSpec:
    (tmp_path / node).mkdir(exist_ok=True)
    (tmp_path / "ck").mkdir(exist_ok=True)
    return HostSpec(agent, Counter, str(tmp_path / node), str(tmp_path / "ck"))


def _started(spec: HostSpec) -> AgentCore:
    """A core as its host builds it: restored, then started (the host does both in its constructor)."""
    core = AgentCore(spec)
    core.ensure_started()
    return core


def _ask(core: AgentCore, msg):
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(msg, core.agent_id))))
    return value if ok else error_from_wire(value)


def test_a_quarantine_outlives_a_crash_until_an_operator_releases_it(tmp_path):
    core = _started(_spec(tmp_path))
    assert _ask(core, Add(n=4)) == 4
    assert core.quarantine("odd replies", "dave")["state"] == "quarantined"
    core.close_files()  # the process dies: no stop, no final checkpoint of its own

    core = _started(_spec(tmp_path))
    assert core.restore_report.source == "local"
    assert core.lifecycle is AgentState.QUARANTINED and core.failure == "quarantined: odd replies"
    refused = _ask(core, GetCount())
    assert isinstance(refused, AgentNotRunning), refused
    assert core.release("erin", "replies checked")["state"] == "running"
    assert _ask(core, GetCount()) == 4, "state kept through quarantine and restart"
    log = core.operator_log()
    assert [(r["action"], r["who"], r["why"]) for r in log] == [
        ("quarantine", "dave", "odd replies"), ("release", "erin", "replies checked")]
    assert log[0]["time"] <= log[1]["time"]
    core.close_files()

    core = _started(_spec(tmp_path))
    assert core.lifecycle is AgentState.RUNNING, "the release is durable too"
    core.stop()


def test_a_quarantine_reaches_another_node_through_the_checkpoint_store(tmp_path):
    core = _started(_spec(tmp_path, "node-a"))
    _ask(core, Add(n=2))
    core.quarantine("suspected leak", "dave")
    core.close_files()  # node-a is gone with its local files

    elsewhere = _started(_spec(tmp_path, "node-b"))
    assert elsewhere.restore_report.source == "checkpoint"
    assert elsewhere.lifecycle is AgentState.QUARANTINED
    assert [r["action"] for r in elsewhere.operator_log()] == ["quarantine"]
    elsewhere.release("erin")
    assert _ask(elsewhere, GetCount()) == 2
    elsewhere.stop()


def test_unhalt_is_recorded_and_an_agent_halted_while_quarantined_goes_back_to_its_quarantine(tmp_path):
    core = _started(_spec(tmp_path))
    core.quarantine("investigating", "dave")
    core.halt("alice", "incident 12")
    core.close_files()

    core = _started(_spec(tmp_path))
    assert core.lifecycle is AgentState.HALTED, "a halt outranks the quarantine it covers"
    assert core.unhalt("alice", "incident closed")["state"] == "quarantined"
    assert core.release("dave", "done")["state"] == "running"
    assert [(r["action"], r["who"], r["why"]) for r in core.operator_log()] == [
        ("quarantine", "dave", "investigating"), ("halt", "alice", "incident 12"),
        ("unhalt", "alice", "incident closed"), ("release", "dave", "done")]
    core.stop()


def test_release_and_unhalt_of_an_agent_not_held_change_nothing_and_record_nothing(tmp_path):
    core = _started(_spec(tmp_path))
    assert core.release("erin", "just in case")["state"] == "running"
    assert core.unhalt("erin", "just in case")["state"] == "running"
    assert core.operator_log() == []
    core.stop()


def test_the_operator_log_keeps_the_newest_records(tmp_path, monkeypatch):
    monkeypatch.setattr(_operations, "ACTIONS_KEPT", 3)
    core = _started(_spec(tmp_path))
    for i in range(4):
        core.quarantine(f"round {i}", "dave")
        core.release("erin", f"round {i}")
    assert [(r["action"], r["why"]) for r in core.operator_log()] == [
        ("release", "round 2"), ("quarantine", "round 3"), ("release", "round 3")]
    assert len(core.operator_log(limit=1)) == 1
    core.stop()


def test_switches_need_who_why_and_a_target():
    from supervisors import SpecError, quarantine, release, unhalt

    with pytest.raises(SpecError, match="who does it and why"):
        quarantine("dave", "", agent="x")
    with pytest.raises(SpecError, match="agent to quarantine"):
        quarantine("dave", "odd", agent="")
    with pytest.raises(SpecError, match="what to release"):
        release("dave", "ok")
    with pytest.raises(SpecError, match="exactly one target"):
        unhalt("dave", "ok", agent="x", everything=True)
    with pytest.raises(SpecError, match="who does it and why"):
        unhalt("", "ok", everything=True)


@pytest.mark.ray
def test_a_quarantined_agent_sigkilled_and_restarted_by_ray_comes_back_quarantined(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    assert ref.ask(Add(n=3)) == 3
    before = ref.admin.quarantine("dave@ops", "odd replies")
    assert before["state"] == "quarantined"
    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        try:
            status = ref.admin.status()
        except AgentUnavailable:  # between the death and Ray's restart
            return None
        return status if status["incarnation"] == before["incarnation"] + 1 else None

    status = wait_for(restarted)
    assert status["state"] == "quarantined" and status["pid"] != before["pid"]
    with pytest.raises(AgentNotRunning, match="quarantined"):
        ref.ask(GetCount())
    assert ref.admin.release("erin@ops", "replies checked")["state"] == "running"
    assert ref.ask(GetCount()) == 3
    assert [(r["action"], r["who"], r["why"]) for r in ref.admin.operator_log()] == [
        ("quarantine", "dave@ops", "odd replies"), ("release", "erin@ops", "replies checked")]


@pytest.mark.ray
def test_a_quarantined_child_that_died_comes_back_quarantined_and_its_release_lifts_the_record(data_dir, refs):
    from runtime import System
    from supervisors import (
        ChildSpec,
        JsonlNotifier,
        SupervisorFlags,
        SupervisorSpec,
        quarantine,
        release,
        start_supervisor,
    )
    from tests.sup_agents import FAST, Bump, Read, Worker, uid

    wid = uid("w")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST),
                          children=[ChildSpec(id=wid, agent=Worker)])
    sup = start_supervisor(spec, data_dir=data_dir)
    refs.append(sup)
    agent = System(data_dir).lookup(wid)
    agent.ask(Bump(n=5), timeout=20)
    log = JsonlNotifier(data_dir / "events.jsonl")
    assert quarantine("dave", "odd replies", agent=wid, supervisor=spec.id, notifiers=[log])["state"] == "quarantined"
    os.kill(sup.child(wid)["pid"], signal.SIGKILL)
    sup.wait_until(lambda s: s.child(wid)["last_exit"] == "crash")
    assert sup.child(wid)["state"] == "quarantined" and sup.child(wid)["pid"] is None

    # The release starts it again: it restores its quarantine, which the release then lifts.
    released = release("erin", "replies checked", agent=wid, supervisor=spec.id, notifiers=[log])
    assert released["state"] == "running"
    assert agent.ask(Read(), timeout=20) == 5
    assert [(r["action"], r["who"]) for r in agent.admin.operator_log()] == [("quarantine", "dave"), ("release", "erin")]
    assert [(e["who"], e["why"]) for e in sup.events() if e["kind"] == "released"] == [("erin", "replies checked")]
    assert [(e["kind"], e["child"], e["who"]) for e in log.read()] == [
        ("quarantined", f"{spec.id}/{wid}", "dave"), ("released", f"{spec.id}/{wid}", "erin")]


@pytest.mark.ray
def test_unhalting_a_subtree_resumes_its_agents_from_their_state_and_notifies(data_dir, refs, tmp_path):
    import ray

    from runtime import System
    from supervisors import (
        ChildSpec,
        JsonlNotifier,
        SupervisorNotRunning,
        SupervisorSpec,
        halt,
        start_supervisor,
        unhalt,
    )
    from tests.sup_agents import Bump, Read, Worker, uid

    leaf, other, sub_id = uid("leaf"), uid("other"), uid("sub")
    sub = SupervisorSpec(id=sub_id, children=[ChildSpec(id=leaf, agent=Worker)])
    root = SupervisorSpec(id=uid("root"), children=[ChildSpec(id=other, agent=Worker),
                                                      ChildSpec(id=sub_id, supervisor=sub)])
    sup = start_supervisor(root, data_dir=data_dir)
    refs.append(sup)
    system = System(data_dir)
    system.lookup(leaf).ask(Bump(n=4), timeout=20)
    halt("bob", "bad deploy", supervisor=root.id)
    os.kill(ray.get(ray.get_actor(other, namespace="garrison").probe.remote())["pid"], signal.SIGKILL)
    sup.wait_until(lambda s: s.child(other)["last_exit"] == "crash")
    assert sup.child(other)["state"] == "halted", "a halted child is not restarted"

    log = JsonlNotifier(tmp_path / "events.jsonl")
    result = unhalt("bob", "fixed in v2", supervisor=root.id, notifiers=[log])
    assert result[root.id]["state"] == "running"
    assert [c["state"] for c in sup.which_children()] == ["running", "running"]
    assert system.lookup(leaf).ask(Read(), timeout=20) == 4
    assert system.lookup(other).ask(Read(), timeout=20) == 0, "started again, from its record, and unhalted"
    for agent in (leaf, other):
        assert [r["action"] for r in system.lookup(agent).admin.operator_log()] == ["halt", "unhalt"]
    assert [(e["kind"], e["who"], e["why"]) for e in log.read()] == [("unhalted", "bob", "fixed in v2")]
    assert [e["who"] for e in sup.events() if e["kind"] == "unhalted"] == ["bob"]
    with pytest.raises(SupervisorNotRunning, match="cannot unhalt while RUNNING"):
        sup.unhalt("bob", "again")
