"""The agent directory (``runtime/_directory.py``) on a real Ray GCS key-value store, with real named actors.

Each test has a namespace of its own, so records and actor names never meet
another test's.  (The newest epoch winning whatever the order of registration,
and a registration clearing older records, are in ``test_fencing``.)
"""

from __future__ import annotations

import uuid

import pytest
import ray
from ray.experimental import internal_kv

from runtime import AgentNotFound
from runtime import _directory as directory


@ray.remote(num_cpus=0)
class Host:
    """A named actor standing in for an agent host: says its name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def whoami(self) -> str:
        return self.name


@pytest.fixture
def ns(ray_session):
    return f"directory-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def hosts(ns):
    """``hosts(name)`` starts a named host actor in ``ns``; all are killed after the test."""
    started = []

    def start(name: str):
        handle = Host.options(name=name, namespace=ns).remote(name)
        assert ray.get(handle.whoami.remote(), timeout=60) == name  # it is up and named
        started.append(handle)
        return handle

    yield start
    for handle in started:
        ray.kill(handle, no_restart=True)


def _who(handle) -> str:
    return ray.get(handle.whoami.remote(), timeout=60)


def test_a_recorded_agent_resolves_to_the_actor_its_record_names(ns, hosts):
    spare = directory.SPARE_PREFIX + "1"
    hosts(spare)
    directory.register("billing", spare, 1, namespace=ns)
    assert directory.actor_name("billing", namespace=ns) == spare
    assert _who(directory.resolve("billing", namespace=ns)) == spare


def test_without_a_record_an_agent_resolves_to_the_actor_named_like_it(ns, hosts):
    hosts("billing")
    assert directory.actor_name("billing", namespace=ns) == "billing"
    assert _who(directory.resolve("billing", namespace=ns)) == "billing"


def test_a_record_naming_a_dead_actor_falls_back_to_the_actor_named_like_the_agent(ns, hosts):
    directory.register("billing", directory.SPARE_PREFIX + "gone", 1, namespace=ns)
    hosts("billing")  # a cold restart took the plain name
    assert _who(directory.resolve("billing", namespace=ns)) == "billing"


def test_resolving_an_agent_with_no_live_actor_is_agent_not_found(ns):
    with pytest.raises(AgentNotFound, match="no live agent 'billing'") as caught:
        directory.resolve("billing", namespace=ns)
    assert caught.value.details["agent_id"] == "billing"
    directory.register("billing", directory.SPARE_PREFIX + "gone", 1, namespace=ns)
    with pytest.raises(AgentNotFound):
        directory.resolve("billing", namespace=ns)


def test_a_stopping_host_forgets_its_own_record_and_leaves_its_successors(ns):
    directory.register("billing", "old-host", 1, namespace=ns)
    directory.register("billing", "new-host", 2, namespace=ns)
    directory.forget("billing", "old-host", namespace=ns)  # the replaced host stops late
    assert directory.actor_name("billing", namespace=ns) == "new-host"
    directory.forget("billing", "new-host", namespace=ns)
    assert directory.entries(namespace=ns) == {}


def test_a_torn_or_foreign_record_counts_as_none(ns):
    directory.register("billing", "host-1", 1, namespace=ns)
    kv_ns = f"garrison-directory/{ns}"
    internal_kv._internal_kv_put("billing@00000000000000000009", b"\xc1 not msgpack", namespace=kv_ns)
    internal_kv._internal_kv_put("billing@00000000000000000008", b"\x93\x01\x02\x03", namespace=kv_ns)  # a list
    internal_kv._internal_kv_put("stray-key", b"x", namespace=kv_ns)  # not a record's key at all
    assert directory.actor_name("billing", namespace=ns) == "host-1", "the newest readable record"
    assert directory.entries(namespace=ns) == {}, "entries take the newest record: unreadable here"
    directory.register("billing", "host-10", 10, namespace=ns)  # a newer host clears the older keys
    assert directory.entries(namespace=ns) == {"billing": "host-10"}


def test_entries_give_each_agents_newest_record_and_namespaces_are_separate(ns):
    directory.register("billing", "host-b", 3, namespace=ns)
    directory.register("ledger", "host-l1", 1, namespace=ns)
    directory.register("ledger", "host-l2", 2, namespace=ns)
    directory.register("billing", "elsewhere", 1, namespace=ns + "-other")
    assert directory.entries(namespace=ns) == {"billing": "host-b", "ledger": "host-l2"}
    assert directory.entries(namespace=ns + "-other") == {"billing": "elsewhere"}


def test_an_agent_id_that_prefixes_another_does_not_see_its_records(ns):
    directory.register("bill", "host-short", 1, namespace=ns)
    directory.register("billing", "host-long", 5, namespace=ns)
    assert directory.actor_name("bill", namespace=ns) == "host-short"
    directory.forget("bill", "host-short", namespace=ns)
    assert directory.actor_name("billing", namespace=ns) == "host-long"


def test_live_ids_are_the_named_actors_and_the_agents_spares_adopted_but_not_idle_spares(ns, hosts):
    hosts("plain")
    hosts(directory.SPARE_PREFIX + "busy")
    hosts(directory.SPARE_PREFIX + "idle")
    directory.register("adopted", directory.SPARE_PREFIX + "busy", 1, namespace=ns)
    directory.register("gone", directory.SPARE_PREFIX + "dead", 1, namespace=ns)  # its host is not live
    assert directory.live_ids(namespace=ns) == ["adopted", "plain"]
