"""Supervisor restarts compose with the runtime's outbox: a stream survives receiver crashes exactly once, in order."""

from __future__ import annotations

import os
import random
import signal
import uuid

import pytest

from runtime import System
from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.agents import Emit, Producer, Report, Sink
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def _outbox(data, prod: str) -> dict:
    status = System(data).lookup(prod).admin.status()
    return {k: status[k] for k in ("outbox_pending", "outbox_in_memory", "delivered", "dead_letters")}


def _dead_letters(data, sinks: list[str]) -> dict:
    return {s: [(d["reason"], d["seq"]) for d in System(data).lookup(s).admin.dead_letters(limit=5)] for s in sinks}


def test_a_stream_to_agents_sigkilled_and_restarted_by_their_supervisor_arrives_exactly_once_in_order(
        ray_session, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sinks = [f"sink{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    prod = f"prod-{uuid.uuid4().hex[:4]}"
    fast_retry = {"retry_backoff": 0.05, "retry_backoff_max": 0.5, "max_batch": 20, "window": 40}
    spec = SupervisorSpec(
        id=f"sup-{uuid.uuid4().hex[:6]}",
        flags=SupervisorFlags(intensity=10, period=60, backoff=BackoffPolicy(initial=0.0, max_delay=0.0, jitter=0)),
        children=[*(ChildSpec(id=s, agent=Sink, init={"delay": 0.004}) for s in sinks),
                  ChildSpec(id=prod, agent=Producer, config=fast_retry)],
    )
    sup = start_supervisor(spec, data_dir=data)
    try:
        system = System(data)
        per_sink = 400
        for s in sinks:
            # The items inherit the Emit's deadline: long enough for three restarts under load, or
            # the last ones would (rightly) expire at a receiver and be dead-lettered there.
            system.lookup(prod).ask(Emit(to=s, start=0, count=per_sink), timeout=180)
        rng = random.Random(4)

        def count(sink: str) -> int:
            return System(data).lookup(sink).ask(Report(), timeout=20)["count"]

        mid_stream = 0
        for _ in range(3):  # a random receiver still receiving is SIGKILLed, three times
            counts = {s: count(s) for s in sinks}
            behind = [s for s in sinks if counts[s] < per_sink * 3 // 4] or [s for s in sinks if counts[s] < per_sink]
            victim = rng.choice(behind or sinks)  # none behind: the stream is over, and mid_stream says so
            # Killed only once the stream is seen reaching it (or it has everything already).
            seen = wait_for(lambda: c if (c := count(victim)) > counts[victim] or c >= per_sink else None,
                            describe=lambda: (victim, {s: count(s) for s in sinks}, _outbox(data, prod),
                                              sup.which_children(), _dead_letters(data, sinks)))
            mid_stream += seen < per_sink
            pid = sup.child(victim)["pid"]
            os.kill(pid, signal.SIGKILL)
            # The supervisor saw the crash and a new incarnation is up (not the dead one still listed as running).
            sup.wait_until(lambda s: (c := s.child(victim))["state"] == "running" and c["pid"] not in (None, pid),
                           timeout=60)
        assert mid_stream >= 2  # the kills really hit receivers with messages still coming

        last: dict = {}

        def all_delivered() -> dict:
            try:
                last["reports"] = {s: System(data).lookup(s).ask(Report(), timeout=10) for s in sinks}
            except Exception as exc:  # a receiver being restarted: look again
                last["reports"] = repr(exc)
                return {}
            reports = last["reports"]
            return reports if all(r["count"] >= per_sink for r in reports.values()) else {}

        reports = wait_for(all_delivered, timeout=90, every=0.3,
                           describe=lambda: (last, _outbox(data, prod), sup.which_children(),
                                             _dead_letters(data, sinks)))
        assert reports == {s: {"count": per_sink, "dups": 0, "out_of_order": 0} for s in sinks}
        assert sum(c["restarts"] for c in sup.which_children()) >= 2
    finally:
        sup.stop()
