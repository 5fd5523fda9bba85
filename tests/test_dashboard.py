"""What the Ray dashboard (its state API) shows of an agent: its id, in the garrison namespace."""

from __future__ import annotations

import pytest

from runtime import NAMESPACE

from .agents import Counter

pytestmark = pytest.mark.ray


def test_agent_is_listed_by_its_id_in_the_garrison_namespace(system, agent_id):
    import ray
    from ray.util.state import list_actors

    system.spawn(Counter, agent_id)
    # This session's cluster, by address: other Ray instances may run on the machine.
    (actor,) = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("name", "=", agent_id)])
    assert (actor.ray_namespace, actor.class_name, actor.state) == (NAMESPACE, "AgentHost", "ALIVE")


def test_host_repr_names_agent_class_incarnation_and_state(system, agent_id):
    ref = system.spawn(Counter, agent_id)
    assert ref.admin.describe() == f"Agent({agent_id}, Counter, incarnation=1, state=RUNNING)"
