"""The supervisor actor on a real local Ray: start order, crash detection, restarts, stop order.

Children are real agent hosts with real LMDB state; crashes are real SIGKILLs
of the child's process (pid from its status).
"""

from __future__ import annotations

import os
import signal

import pytest
import ray

from runtime import System
from supervisors import (
    ChildNotFound,
    ChildSpec,
    ChildStartError,
    JsonlNotifier,
    RestartType,
    SpecError,
    Strategy,
    SupervisorFlags,
    SupervisorSpec,
    start_supervisor,
)
from tests.sup_agents import FAST, BrokenAtStart, BrokenIfNamedBad, Bump, Read, SlowStop, Worker, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def _start(spec, data_dir, refs, **kw):
    ref = start_supervisor(spec, data_dir=data_dir, seed=1, **kw)
    refs.append(ref)
    return ref


def _sigkill(ref, child_id):
    pid = ref.child(child_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def _ask(child_id, msg, data_dir):
    return System(data_dir).lookup(child_id).ask(msg, timeout=20)


def _kinds(events, kind):
    return [e["child"] for e in events if e["kind"] == kind]


def test_one_for_one_restarts_only_the_crashed_child_with_its_state(data_dir, refs):
    ids = [uid(n) for n in "abc"]
    spec = SupervisorSpec(
        id=uid("sup"), flags=SupervisorFlags(intensity=3, period=10, backoff=FAST),
        children=[ChildSpec(id=i, agent=Worker) for i in ids],
    )
    sup = _start(spec, data_dir, refs)
    children = sup.which_children()
    assert [c["id"] for c in children] == ids
    assert [c["state"] for c in children] == ["running"] * 3
    assert _kinds(sup.events(), "started") == ids  # in start order
    assert _ask(ids[1], Bump(n=5), data_dir) == 5
    before = {c["id"]: c for c in children}

    old_pid = _sigkill(sup, ids[1])
    sup.wait_until(lambda s: s.child(ids[1])["restarts"] == 1 and s.child(ids[1])["state"] == "running")
    after = {c["id"]: c for c in sup.which_children()}
    b = after[ids[1]]
    assert b["pid"] != old_pid and b["incarnation"] == before[ids[1]]["incarnation"] + 1
    assert b["last_exit"] == "crash" and "died" in b["last_failure"]
    for other in (ids[0], ids[2]):  # untouched: same process, no restart
        assert after[other]["pid"] == before[other]["pid"] and after[other]["restarts"] == 0
    assert _ask(ids[1], Read(), data_dir) == 5  # state restored from its LMDB
    assert ray.get_actor(ids[1], namespace="garrison") is not None


def test_rest_for_one_restarts_the_crashed_child_and_those_after_it_in_order(data_dir, refs):
    ids = [uid(n) for n in "abc"]
    spec = SupervisorSpec(
        id=uid("sup"), flags=SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=3, period=10, backoff=FAST),
        children=[ChildSpec(id=i, agent=Worker) for i in ids],
    )
    sup = _start(spec, data_dir, refs)
    mark = len(sup.events())
    pids = {c["id"]: c["pid"] for c in sup.which_children()}
    _sigkill(sup, ids[1])
    sup.wait_until(lambda s: all(c["state"] == "running" for c in s.which_children())
                   and s.child(ids[2])["restarts"] == 1)
    events = sup.events(mark)
    assert _kinds(events, "stopped") == [ids[2]]          # running siblings after b, reverse order
    assert _kinds(events, "restarted") == [ids[1], ids[2]]  # then b and c, in start order
    now = {c["id"]: c["pid"] for c in sup.which_children()}
    assert now[ids[0]] == pids[ids[0]]
    assert now[ids[1]] != pids[ids[1]] and now[ids[2]] != pids[ids[2]]


def test_a_child_that_cannot_start_fails_the_start_and_stops_the_others_in_reverse(data_dir, refs):
    ok1, ok2, bad = uid("ok1"), uid("ok2"), uid("bad")
    spec = SupervisorSpec(id=uid("sup"), children=[
        ChildSpec(id=ok1, agent=Worker), ChildSpec(id=ok2, agent=Worker), ChildSpec(id=bad, agent=BrokenAtStart),
    ])
    log = data_dir / "events.jsonl"
    with pytest.raises(ChildStartError) as info:
        start_supervisor(spec, data_dir=data_dir, notifiers=[JsonlNotifier(log)])
    assert info.value.details["child"] == bad
    assert "misconfigured on purpose" in str(info.value)
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert not {ok1, ok2, bad, spec.id} & names  # nothing left running
    events = JsonlNotifier(log).read()
    assert [e["child"] for e in events if e["kind"] == "stopped"] == [ok2, ok1]
    assert any(e["kind"] == "start_failed" and e["alert"] for e in events)


def test_children_started_concurrently_all_run_and_one_failing_stops_the_others(data_dir, refs):
    ids = [uid(n) for n in ("c1", "c2", "c3", "c4")]
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(start_concurrency=3),
                          children=[ChildSpec(id=i, agent=Worker) for i in ids])
    sup = _start(spec, data_dir, refs)
    assert [c["id"] for c in sup.which_children()] == ids, "listed in spec order, however they started"
    assert {c["state"] for c in sup.which_children()} == {"running"}
    starts = [e for e in sup.events() if e["kind"] == "started"]
    assert sorted(e["child"] for e in starts) == sorted(ids)

    ok1, bad, ok2 = uid("ok1"), uid("bad"), uid("ok2")
    failing = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(start_concurrency=3), children=[
        ChildSpec(id=ok1, agent=Worker), ChildSpec(id=bad, agent=BrokenAtStart), ChildSpec(id=ok2, agent=Worker)])
    with pytest.raises(ChildStartError) as info:
        start_supervisor(failing, data_dir=data_dir)
    assert info.value.details["child"] == bad
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert not {ok1, ok2, bad, failing.id} & names  # the others were started, and stopped again


def test_stop_is_in_reverse_order_and_a_slow_child_is_killed_after_its_shutdown_timeout(data_dir, refs):
    a, slow, c = uid("a"), uid("slow"), uid("c")
    spec = SupervisorSpec(id=uid("sup"), children=[
        ChildSpec(id=a, agent=Worker),
        ChildSpec(id=slow, agent=SlowStop, init={"delay": 30.0}, shutdown=0.5),
        ChildSpec(id=c, agent=Worker),
    ])
    sup = _start(spec, data_dir, refs)
    _ask(a, Bump(n=3), data_dir)
    mark = len(sup.events())
    status = sup.stop(timeout=60, kill=False)
    assert status["state"] == "stopped"
    events = [e for e in sup.events(mark) if e["kind"] in ("stopped", "killed") and e["child"]]
    assert [(e["kind"], e["child"]) for e in events] == [("stopped", c), ("killed", slow), ("stopped", a)]
    names = {x["name"] for x in ray.util.list_named_actors(all_namespaces=True)}
    assert not {a, slow, c} & names
    # The graceful stop took a final checkpoint: a fresh agent with that id resumes the count.
    sys_ = System(data_dir)
    try:
        assert sys_.spawn(Worker, a, detached=False).ask(Read(), timeout=20) == 3
    finally:
        sys_.stop(a)


def test_one_for_all_restarts_everyone_in_order_and_drops_a_temporary_sibling(data_dir, refs):
    a, t, c = uid("a"), uid("tmp"), uid("c")
    spec = SupervisorSpec(
        id=uid("sup"), flags=SupervisorFlags(strategy=Strategy.ONE_FOR_ALL, intensity=3, period=10, backoff=FAST),
        children=[ChildSpec(id=a, agent=Worker), ChildSpec(id=t, agent=Worker, restart=RestartType.TEMPORARY),
                  ChildSpec(id=c, agent=Worker)],
    )
    sup = _start(spec, data_dir, refs)
    mark = len(sup.events())
    _sigkill(sup, c)
    sup.wait_until(lambda s: [x["id"] for x in s.which_children()] == [a, c]
                   and all(x["state"] == "running" for x in s.which_children()))
    events = sup.events(mark)
    assert _kinds(events, "stopped") == [t, a]       # reverse start order
    assert _kinds(events, "restarted") == [a, c]     # start order; the temporary one is gone
    assert t not in {x["name"] for x in ray.util.list_named_actors(all_namespaces=True)}


def test_a_simple_one_for_one_pool_grows_restarts_one_child_and_shrinks(data_dir, refs):
    spec = SupervisorSpec(
        id=uid("pool"), flags=SupervisorFlags(strategy=Strategy.SIMPLE_ONE_FOR_ONE, intensity=3, period=10,
                                                backoff=FAST),
        children=[ChildSpec(id="template", agent=Worker)],
    )
    sup = _start(spec, data_dir, refs)
    assert sup.which_children() == []
    w1, w2 = uid("w1"), uid("w2")
    sup.start_child(w1)
    sup.start_child(w2)
    with pytest.raises(SpecError):
        sup.start_child(w1)
    pid2 = sup.child(w2)["pid"]
    _sigkill(sup, w1)
    sup.wait_until(lambda s: s.child(w1)["restarts"] == 1 and s.child(w1)["state"] == "running")
    assert sup.child(w2)["pid"] == pid2
    sup.terminate_child(w2)
    assert [x["id"] for x in sup.which_children()] == [w1]
    assert w2 not in {x["name"] for x in ray.util.list_named_actors(all_namespaces=True)}
    with pytest.raises(ChildNotFound):
        sup.terminate_child(w2)


def test_a_pool_starts_several_children_side_by_side_and_drops_only_those_that_failed(data_dir, refs):
    spec = SupervisorSpec(
        id=uid("pool"), flags=SupervisorFlags(strategy=Strategy.SIMPLE_ONE_FOR_ONE, intensity=3, period=10,
                                                backoff=FAST, start_concurrency=3),
        children=[ChildSpec(id="template", agent=BrokenIfNamedBad)],
    )
    sup = _start(spec, data_dir, refs)
    ids = [uid("w1"), uid("w2"), uid("w3")]
    started = sup.start_children(ids)
    assert [c["id"] for c in started] == ids and {c["state"] for c in started} == {"running"}
    assert len({c["pid"] for c in started}) == 3
    with pytest.raises(SpecError, match="already has a child"):
        sup.start_children([uid("w4"), ids[0]])
    with pytest.raises(SpecError, match="already has a child"):
        sup.start_children([uid("w5")] * 2)
    assert [c["id"] for c in sup.which_children()] == ids, "a refused call adds no child"
    good, bad = uid("w6"), uid("bad")
    with pytest.raises(ChildStartError, match="failed to start"):
        sup.start_children([good, bad])
    assert [c["id"] for c in sup.which_children()] == [*ids, good], "the one that started stays"
    assert sup.child(good)["state"] == "running"


def test_a_normal_exit_restarts_a_permanent_child_but_not_a_transient_one(data_dir, refs):
    p, t = uid("perm"), uid("trans")
    spec = SupervisorSpec(
        id=uid("sup"), flags=SupervisorFlags(intensity=3, period=10, backoff=FAST),
        children=[ChildSpec(id=p, agent=Worker), ChildSpec(id=t, agent=Worker, restart=RestartType.TRANSIENT)],
    )
    sup = _start(spec, data_dir, refs)
    for child_id in (t, p):  # each stops gracefully of its own accord (not through the supervisor)
        ray.get(ray.get_actor(child_id, namespace="garrison").stop.remote(), timeout=30)
    sup.wait_until(lambda s: s.child(p)["restarts"] == 1 and s.child(p)["state"] == "running"
                   and s.child(t)["last_exit"] == "normal")
    # The supervisor decides in the same step that records an exit: a restart of the transient
    # child would already show as "restarting" (FAST backoff) or in the events.
    c = sup.child(t)
    assert (c["state"], c["restarts"], c["pid"], c["last_failure"]) == ("stopped", 0, None, None)
    assert not [e for e in sup.events() if e.get("child") == t and e["kind"] in ("restarting", "restarted")]
    assert sup.child(p)["last_exit"] == "normal"
    # The stopped actor is killed once its stop has answered, which frees its name.
    wait_for(lambda: t not in {x["name"] for x in ray.util.list_named_actors(all_namespaces=True)}, timeout=30)
    assert sup.child(t)["state"] == "stopped"
