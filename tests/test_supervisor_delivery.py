"""Supervisor restarts compose with the runtime's outbox: a stream survives receiver crashes exactly once, in order."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid

import pytest

from runtime import System
from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.agents import Emit, Producer, Report, Sink

pytestmark = pytest.mark.ray


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
            system.lookup(prod).ask(Emit(to=s, start=0, count=per_sink), timeout=20)
        rng = random.Random(4)
        mid_stream = 0
        for _ in range(3):  # a random receiver is SIGKILLed, three times
            time.sleep(0.5)
            victim = rng.choice(sinks)
            sup.wait_until(lambda s: s.child(victim)["state"] == "running")
            seen = System(data).lookup(victim).ask(Report(), timeout=20)["count"]
            mid_stream += seen < per_sink
            os.kill(sup.child(victim)["pid"], signal.SIGKILL)
        assert mid_stream >= 2  # the kills really hit receivers with messages still coming
        deadline = time.monotonic() + 90
        reports = {}
        while time.monotonic() < deadline:
            try:
                reports = {s: System(data).lookup(s).ask(Report(), timeout=10) for s in sinks}
            except Exception:
                reports = {}
            if reports and all(r["count"] >= per_sink for r in reports.values()):
                break
            time.sleep(0.3)
        assert reports == {s: {"count": per_sink, "dups": 0, "out_of_order": 0} for s in sinks}
        assert sum(c["restarts"] for c in sup.which_children()) >= 2
    finally:
        sup.stop()
