"""Restart intensity, escalation up a tree, root quarantine and failed restarts, on a real local Ray."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from runtime import System
from supervisors import (
    BackoffPolicy,
    ChildSpec,
    JsonlNotifier,
    SupervisorFlags,
    SupervisorSpec,
    start_supervisor,
)
from tests.sup_agents import FAST, Bump, FlakyStart, Read, Worker, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def _pid_of(ref, child_id):
    return ref.child(child_id)["pid"]


def _running(ref, child_id, restarts):
    c = ref.child(child_id)
    return c["state"] == "running" and c["restarts"] == restarts


def test_intensity_exceeded_at_the_root_stops_children_quarantines_and_alerts(data_dir, refs):
    a, b = uid("a"), uid("b")
    spec = SupervisorSpec(id=uid("root"), flags=SupervisorFlags(intensity=1, period=60, backoff=FAST),
                          children=[ChildSpec(id=a, agent=Worker), ChildSpec(id=b, agent=Worker)])
    log = JsonlNotifier(data_dir / "alerts.jsonl", alerts_only=True)
    sup = start_supervisor(spec, data_dir=data_dir, notifiers=[log])
    refs.append(sup)
    System(data_dir).lookup(b).ask(Bump(n=7), timeout=20)

    os.kill(_pid_of(sup, a), signal.SIGKILL)  # restart 1 of 1 allowed: fine
    sup.wait_until(lambda s: _running(s, a, 1))
    assert sup.status()["state"] == "running"

    os.kill(_pid_of(sup, a), signal.SIGKILL)  # the second within 60 s: give up
    sup.wait_until(lambda s: s.status()["state"] == "quarantined")
    status = sup.status()
    assert [c["state"] for c in status["children"]] == ["quarantined", "quarantined"]
    assert "more than 1 restart(s) in 60" in status["escalation"]
    names = {x["name"] for x in ray.util.list_named_actors(all_namespaces=True)}
    assert not {a, b} & names  # children stopped ...
    alert = wait_for(lambda: [e for e in log.read() if e["kind"] == "quarantined"], timeout=30, describe=log.read)
    assert alert[0]["supervisor"] == spec.id and alert[0]["alert"]

    # ... with their state kept: release restarts them from it.
    sup.release(who="oncall")
    assert sup.status()["state"] == "running"
    assert System(data_dir).lookup(b).ask(Read(), timeout=20) == 7


def test_a_sub_supervisor_that_gives_up_escalates_and_its_parent_restarts_it(data_dir, refs):
    leaf, sub_id = uid("leaf"), uid("sub")
    sub = SupervisorSpec(id=sub_id, flags=SupervisorFlags(intensity=0, period=60, backoff=FAST),
                         children=[ChildSpec(id=leaf, agent=Worker)])
    root = SupervisorSpec(id=uid("root"), flags=SupervisorFlags(intensity=3, period=60, backoff=FAST),
                          children=[ChildSpec(id=sub_id, supervisor=sub)])
    sup = start_supervisor(root, data_dir=data_dir)
    refs.append(sup)
    assert sup.child(sub_id)["kind"] == "supervisor"
    System(data_dir).lookup(leaf).ask(Bump(n=4), timeout=20)
    leaf_pid = ray.get(ray.get_actor(leaf, namespace="garrison").probe.remote())["pid"]
    os.kill(leaf_pid, signal.SIGKILL)  # intensity 0: the sub-supervisor gives up at once

    sup.wait_until(lambda s: _running(s, sub_id, 1), timeout=60)
    c = sup.child(sub_id)
    assert c["last_exit"] == "crash" and "escalated" in c["last_failure"]
    assert sup.status()["state"] == "running"  # the root stayed within its own intensity
    new_leaf = ray.get_actor(leaf, namespace="garrison")
    assert ray.get(new_leaf.probe.remote())["pid"] != leaf_pid
    assert System(data_dir).lookup(leaf).ask(Read(), timeout=20) == 4


def test_a_failing_restart_counts_is_retried_and_does_not_block_the_supervisor(data_dir, refs):
    marker = data_dir / "broken"
    flaky = uid("flaky")
    spec = SupervisorSpec(
        id=uid("root"),
        flags=SupervisorFlags(intensity=20, period=60,
                              backoff=BackoffPolicy(initial=0.3, factor=1.5, max_delay=1.0, jitter=0.0)),
        children=[ChildSpec(id=flaky, agent=FlakyStart, init={"marker": str(marker)})],
    )
    sup = start_supervisor(spec, data_dir=data_dir)
    refs.append(sup)
    marker.touch()
    os.kill(_pid_of(sup, flaky), signal.SIGKILL)
    sup.wait_until(lambda s: [e for e in s.events() if e["kind"] == "restart_failed"], timeout=30)
    t0 = time.monotonic()
    status = sup.status()  # answered while restarts are being retried
    assert time.monotonic() - t0 < 2.0
    assert status["children"][0]["state"] in ("restarting", "starting", "stopped")
    assert "marker" in status["children"][0]["last_failure"]
    assert status["restarts_in_window"] >= 2  # the crash, and at least one failed restart
    marker.unlink()
    sup.wait_until(lambda s: s.child(flaky)["state"] == "running", timeout=30)
    assert sup.status()["state"] == "running"
