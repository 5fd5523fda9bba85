"""Monitors: told when an agent goes down and why, at once if it is already down."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from supervisors import monitor, wait_down
from tests.sup_agents import Worker

pytestmark = pytest.mark.ray


def test_an_agent_that_is_not_live_is_reported_down_at_once(ray_session):
    t0 = time.monotonic()
    down = wait_down("nobody-home-here", timeout=30)
    assert down is not None and down.reason == "noproc"
    assert time.monotonic() - t0 < 1.0


def test_a_graceful_stop_is_normal_and_a_sigkill_is_a_crash(system, agent_id):
    system.spawn(Worker, agent_id)
    m = monitor(agent_id)
    assert m.wait(timeout=0.3) is None  # still up
    system.stop(agent_id)
    down = m.wait(timeout=20)
    assert down.reason == "normal" and down.status["state"] == "stopped"

    crash_id = agent_id + "-c"
    system.spawn(Worker, crash_id, ray_options={"max_restarts": 0})
    pid = ray.get(ray.get_actor(crash_id, namespace="garrison").probe.remote())["pid"]
    m = monitor(crash_id)
    os.kill(pid, signal.SIGKILL)
    down = m.wait(timeout=20)
    assert down.reason == "crash" and down.detail
