"""A caller holding an AgentRef reaches the new incarnation after a supervisor restart."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from runtime import System
from supervisors import BackoffPolicy, ChildSpec, SupervisorFlags, SupervisorSpec, start_supervisor
from tests.sup_agents import Bump, Read, Worker

pytestmark = pytest.mark.ray


def test_an_agent_ref_held_across_a_supervisor_restart_reaches_the_new_incarnation(ray_session, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    wid = f"w-{uuid.uuid4().hex[:6]}"
    spec = SupervisorSpec(id=f"sup-{uuid.uuid4().hex[:6]}",
                          flags=SupervisorFlags(backoff=BackoffPolicy(initial=0, max_delay=0, jitter=0)),
                          children=[ChildSpec(id=wid, agent=Worker)])
    sup = start_supervisor(spec, data_dir=data)
    try:
        ref = System(data).lookup(wid)
        assert ref.ask(Bump(n=2), timeout=10) == 2
        os.kill(sup.child(wid)["pid"], signal.SIGKILL)
        sup.wait_until(lambda s: s.child(wid)["restarts"] == 1 and s.child(wid)["state"] == "running")
        assert ref.ask(Read(), timeout=5) == 2
    finally:
        sup.stop()
