"""A host that cannot start says why, fast, and leaves no actor restarting behind.

Real actors on the session's Ray; what is left is read through Ray's state API.
"""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from runtime import AgentStartError, GarrisonError, UnencodableReply
from tests.start_agents import Explodes, FailsOnStart, Odd, Oddity, Poke

pytestmark = pytest.mark.ray


def _live_actors(name: str) -> list[str]:
    """States of the actors named ``name`` that are not dead (Ray's state API)."""
    import ray
    from ray.util.state import list_actors

    # This session's cluster, by address: other Ray instances may run on the machine.
    found = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("name", "=", name)])
    return [a.state for a in found if a.state != "DEAD"]


def _spawn_fails(system, cls, agent_id) -> tuple[AgentStartError, float]:
    t0 = time.monotonic()
    with pytest.raises(AgentStartError) as err:
        system.spawn(cls, agent_id, timeout=60)
    return err.value, time.monotonic() - t0


def test_an_agent_class_the_workers_cannot_import(system, agent_id, tmp_path, monkeypatch):
    # A module only this driver's sys.path has: the code was not shipped to the cluster.
    mods = tmp_path / "driver_only"
    mods.mkdir()
    (mods / "lonely_agents.py").write_text(textwrap.dedent("""
        from protocols import Message
        from runtime import Agent, handler

        class Hello(Message, name="lonely.hello"):
            pass

        class Lonely(Agent):
            @handler
            def hello(self, msg: Hello) -> str:
                return "hi"
    """))
    monkeypatch.syspath_prepend(str(mods))
    import lonely_agents

    try:
        err, took = _spawn_fails(system, lonely_agents.Lonely, agent_id)
    finally:
        sys.modules.pop("lonely_agents", None)
    assert took < 30, took
    assert "ModuleNotFoundError" in err.message and "lonely_agents" in err.message, err.message
    assert "working_dir" in err.message and "py_modules" in err.message, "the error names the fix"
    assert _live_actors(agent_id) == []


def test_a_constructor_that_always_raises(system, agent_id):
    err, took = _spawn_fails(system, Explodes, agent_id)
    assert took < 30, took
    assert "RuntimeError" in err.message and "no config for the explodes agent" in err.message, err.message
    assert _live_actors(agent_id) == []


def test_on_start_that_always_raises(system, agent_id):
    err, took = _spawn_fails(system, FailsOnStart, agent_id)
    assert took < 30, took
    assert "downstream system unreachable" in err.message, err.message
    assert _live_actors(agent_id) == []


def test_a_reply_that_cannot_be_encoded_is_a_typed_error_and_rolls_back(system, agent_id):
    odd = system.spawn(Odd, agent_id)
    with pytest.raises(UnencodableReply) as err:
        odd.ask(Oddity(key="k1"), timeout=30)
    assert isinstance(err.value, GarrisonError) and err.value.details["value_type"] == "object"
    # The handler's change was rolled back, as if it had raised; the agent goes on.
    assert odd.ask(Poke(), timeout=30) == []
    assert odd.admin.status()["state"] == "running"
