"""Agents run at the node's normal priority in a Ray that Garrison starts (``EMBEDDED_RAY_CONFIG``).

Ray's default nice value for workers is 15: beside one busy loop per core at normal priority
an agent got about a thirtieth of the CPU, and the suite ran seven times slower.
"""

from __future__ import annotations

import pytest

from runtime._system import EMBEDDED_RAY_CONFIG, NAMESPACE, embedded_ray_init

from .agents import Counter


def test_a_ray_that_system_starts_runs_workers_at_normal_priority(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert EMBEDDED_RAY_CONFIG == {"worker_niceness": 0}
    assert embedded_ray_init() == {"namespace": NAMESPACE, "include_dashboard": False, "log_to_driver": False,
                                   "_system_config": {"worker_niceness": 0}}


def test_the_callers_ray_init_wins_and_its_system_config_is_merged(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    got = embedded_ray_init(include_dashboard=True, namespace="n",
                            _system_config={"worker_niceness": 5, "object_timeout_milliseconds": 1})
    assert got["include_dashboard"] is True and got["namespace"] == "n"
    assert got["_system_config"] == {"worker_niceness": 5, "object_timeout_milliseconds": 1}


@pytest.mark.parametrize("joining", ["address", "env"])
def test_joining_a_cluster_passes_no_system_config(monkeypatch, joining):
    # Ray refuses a _system_config when it connects to a running cluster: that one's own settings hold.
    if joining == "env":
        monkeypatch.setenv("RAY_ADDRESS", "192.0.2.9:6379")
        got = embedded_ray_init()
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        got = embedded_ray_init("192.0.2.9:6379")
    assert "_system_config" not in got


@pytest.mark.ray
def test_an_agent_reports_its_nice_value_and_it_is_the_nodes_normal_one(system, agent_id):
    # The session's Ray was started by a System (conftest), as a user's embedded one is.
    ref = system.spawn(Counter, agent_id)
    status = ref.admin.status()
    with open(f"/proc/{status['pid']}/stat") as f:
        nice = int(f.read().rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)
    assert status["nice"] == nice == 0
