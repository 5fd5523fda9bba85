"""Packed agents on a real Ray: many agents in one host actor, each with its own state, order and epoch.

The agents are tests/packed_agents.py's; each test's classes name a packed host of their own.
The policy, the handle, the roster and resuming in-process are tests/test_packed_policy.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading

import pytest
import ray

from protocols import encode_envelope, error_from_wire, make_envelope
from runtime import AgentAlreadyRunning, Fenced
from runtime._packed_handle import PackedHandle
from runtime._packed_hosts import PackedHosts
from runtime._packing import LANES, PACKED_PREFIX
from runtime._reply import decode_reply

from .packed_agents import (
    CrashSession,
    FencedSession,
    IdleSession,
    Note,
    Notes,
    Relay,
    Session,
    SmallSession,
    Whoami,
    end_packed_hosts,
)
from .test_cli import console
from .waiting import wait_for


@pytest.fixture(autouse=True)
def no_packed_hosts_left(ray_session):
    """Whatever a test left (a failure half-way), the next one starts without packed hosts of these tests."""
    yield
    end_packed_hosts("test-")


def _host(ref):
    handle = ref.route.handle
    assert isinstance(handle, PackedHandle)
    return handle.host


def _stats(ref) -> dict:
    return ray.get(_host(ref).stats.remote(), timeout=30)


def test_many_agents_in_one_host_each_keep_their_own_state(system, agent_id):
    refs = [system.spawn(Session, f"{agent_id}-{i}") for i in range(40)]
    assert len({_host(r)._actor_id for r in refs}) == 1  # one actor serves them all
    for k in range(5):
        for i, ref in enumerate(refs):
            ref.tell(Note(item=i * 100 + k))
    refs[0].tell(Relay(to=refs[1].agent_id, item=-1))  # agent to agent, through the outbox, both packed
    for ref in refs:
        ref.flush()
    wait_for(lambda: refs[1].ask(Notes())[-1:] == [-1])
    for i, ref in enumerate(refs[2:], start=2):
        assert ref.ask(Notes()) == [i * 100 + k for k in range(5)]
        assert ref.ask(Whoami()) == ref.agent_id
    assert refs[1].ask(Notes()) == [100, 101, 102, 103, 104, -1]
    for ref in refs:  # each its own LMDB environment, under the node's data directory
        assert (system.data_dir / "agents" / ref.agent_id / "state" / "data.mdb").exists()
    stats = _stats(refs[0])
    assert stats["placed"] == 40 and stats["active"] == 40
    found = system.lookup(refs[7].agent_id)  # through the directory, from the id alone
    assert isinstance(found.route.handle, PackedHandle) and found.ask(Notes()) == [700 + k for k in range(5)]
    assert set(system.agents()) >= {r.agent_id for r in refs}
    assert not any(name.startswith(PACKED_PREFIX) for name in system.agents())
    # What an operator lists: the host, with what it serves (``garrison hosts`` from a shell).
    [listed] = [h for h in system.packed_hosts() if h["host"] == f"{PACKED_PREFIX}test-session"]
    assert listed["placed"] == 40 and listed["active"] == 40 and listed["pid"] == stats["pid"]
    shown = console("hosts", address=ray.get_runtime_context().gcs_address)
    assert shown.returncode == 0, shown.stderr
    [row] = [h for h in json.loads(shown.stdout) if h["host"] == f"{PACKED_PREFIX}test-session"]
    assert row["placed"] == 40 and row["passive"] == 0 and row["capacity"] == listed["capacity"]


def test_each_agent_handles_its_messages_in_order_while_others_interleave_and_passivate(system, agent_id):
    refs = [system.spawn(SmallSession, f"{agent_id}-{i}") for i in range(12)]  # capacity 4: constant churn

    def stream(ref_slice, base):
        for k in range(30):
            for ref in ref_slice:
                ref.tell(Note(item=base + k))

    # Two callers at once, each its own refs (order is per sender), each to half of the agents.
    threads = [threading.Thread(target=stream, args=(refs[:6], 0)), threading.Thread(target=stream, args=(refs[6:], 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ref in refs:
        ref.flush(timeout=120)
    for ref in refs:
        assert ref.ask(Notes(), timeout=60) == list(range(30))
    stats = _stats(refs[0])
    assert stats["passivations"] > 0 and stats["resumed"] > 0
    wait_for(lambda: _stats(refs[0])["active"] <= 4, describe=lambda: _stats(refs[0]))


def test_an_idle_agent_is_passivated_and_its_next_message_reopens_it_with_its_state(system, agent_id):
    refs = [system.spawn(IdleSession, f"{agent_id}-{i}") for i in range(5)]
    for i, ref in enumerate(refs):
        assert ref.ask(Note(item=i)) == 1
    before = {ref.agent_id: ref.admin.status() for ref in refs}
    wait_for(lambda: _stats(refs[0])["active"] == 0, describe=lambda: _stats(refs[0]))  # idle_timeout 0.5 s
    assert all(ref.admin.status()["state"] == "passive" for ref in refs)  # a look does not reopen it
    assert _stats(refs[0])["active"] == 0
    for i, ref in enumerate(refs):
        assert ref.ask(Note(item=10 + i)) == 2  # reopened by the message, state and all
        assert ref.ask(Notes()) == [i, 10 + i]
        status = ref.admin.status()
        assert status["state"] == "running" and status["restore"]["source"] == "resumed"
        assert status["epoch"] == before[ref.agent_id]["epoch"]  # the same incarnation going on
        assert status["incarnation"] == before[ref.agent_id]["incarnation"]
    stats = _stats(refs[0])
    assert stats["resumed"] >= 5 and stats["passivations"] >= 5


def test_a_sigkilled_packed_host_comes_back_with_every_agents_state_and_nothing_handled_twice(system, agent_id):
    refs = [system.spawn(CrashSession, f"{agent_id}-{i}") for i in range(6)]
    quiet = system.spawn(CrashSession, f"{agent_id}-quiet")
    quiet.ask(Note(item=0))
    pid = _stats(refs[0])["pid"]
    for k in range(25):
        for ref in refs:
            ref.tell(Note(item=k))
    os.kill(pid, signal.SIGKILL)  # with tells in flight
    for k in range(25, 50):
        for ref in refs:
            ref.tell(Note(item=k))
    for ref in refs:
        ref.flush(timeout=120)
    stats = wait_for(lambda: _alive_stats(refs[0], pid))
    for ref in refs:
        items = ref.ask(Notes(), timeout=60)
        assert sorted(items) == list(range(50)), items  # every tell once: none lost, none handled twice
    # The agent that was open at the crash and got no message since was reopened by the host itself.
    assert quiet.admin.status()["state"] == "running"
    assert quiet.ask(Notes()) == [0]
    assert stats["started"] >= 1 and quiet.admin.status()["restore"]["source"] == "local"


def _alive_stats(ref, old_pid):
    try:
        stats = ray.get(_host(ref).stats.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - restarting: not yet
        return None
    return stats if stats["pid"] != old_pid else None


def _raw_ask(handle, agent_id, msg):
    ok, value = decode_reply(ray.get(handle.deliver.remote(encode_envelope(make_envelope(msg, agent_id))),
                                     timeout=30))
    return value if ok else error_from_wire(value)


def test_two_packed_hosts_cannot_both_serve_one_agent(system, agent_id, tmp_path):
    ref = system.spawn(FencedSession, agent_id)
    assert ref.ask(Note(item=1)) == 1
    ref.admin.checkpoint()
    epoch_a = ref.admin.status()["epoch"]
    host_a = _host(ref)
    hosts = PackedHosts(system.namespace)
    host_b = hosts.host(f"{PACKED_PREFIX}test-fence-b", capacity=10, checkpoint_dir=str(system.checkpoint_dir))
    on_b = PackedHandle(host_b, agent_id, LANES)
    spec = system.host_spec(FencedSession, agent_id)
    try:
        # Placed while another live host serves it (by the directory): refused.
        with pytest.raises(AgentAlreadyRunning):
            ray.get(on_b.place.remote(spec), timeout=30)
        # Taken over on purpose with the same files while host A has it open: the host lock refuses.
        with pytest.raises(AgentAlreadyRunning):
            ray.get(on_b.place.remote(spec, True), timeout=30)
        # Taken over from another node's files (its own data directory): a newer epoch fences host A.
        other_node = tmp_path / "node-b"
        other_node.mkdir()
        status = ray.get(on_b.place.remote(dataclasses.replace(spec, data_dir=str(other_node)), True), timeout=30)
        assert status["state"] == "running" and status["epoch"] > epoch_a
        # Host A's copy commits nothing more: it answers Fenced, and forgets the agent.
        answer = _raw_ask(PackedHandle(host_a, agent_id, LANES), agent_id, Note(item=2))
        assert isinstance(answer, Fenced)
        wait_for(lambda: ray.get(host_a.stats.remote())["placed"] == 0)
        # A ref still pointing at host A follows the directory to host B, where the state is.
        assert ref.ask(Note(item=3)) == 2
        assert ref.ask(Notes()) == [1, 3]
        assert ray.get(host_b.stats.remote())["placed"] == 1
        assert ref.admin.status()["packed_host"] == f"{PACKED_PREFIX}test-fence-b"
    finally:
        ray.kill(host_b, no_restart=True)


def test_a_host_that_lost_an_agent_to_another_never_takes_it_back(system, agent_id, tmp_path):
    """Passivated on host A, then taken over by host B: A refuses it, whether it remembers the agent's
    epoch (a resume, refused by the newer epoch) or not (restarted after a crash: refused by the directory)."""
    refs = [system.spawn(FencedSession, f"{agent_id}-{i}") for i in range(2)]
    for ref in refs:
        assert ref.ask(Note(item=1)) == 1
    host_a = _host(refs[0])
    assert ray.get(host_a.passivate.remote(), timeout=60) == 2
    host_b = PackedHosts(system.namespace).host(f"{PACKED_PREFIX}test-fence-b", capacity=10,
                                                checkpoint_dir=str(system.checkpoint_dir))
    other_node = tmp_path / "node-b"
    other_node.mkdir()
    try:
        for ref in refs:
            spec = dataclasses.replace(system.host_spec(FencedSession, ref.agent_id), data_dir=str(other_node))
            ray.get(PackedHandle(host_b, ref.agent_id, LANES).place.remote(spec, True), timeout=30)
        # A remembers the first one's epoch: its resume finds a newer one, answers Fenced and forgets it.
        first, second = refs
        assert isinstance(_raw_ask(PackedHandle(host_a, first.agent_id, LANES), first.agent_id, Notes()), Fenced)
        # After a crash A remembers nothing: the directory says B serves the second one.
        pid = ray.get(host_a.stats.remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _alive_stats(first, pid))
        assert isinstance(_raw_ask(PackedHandle(host_a, second.agent_id, LANES), second.agent_id, Notes()), Fenced)
        wait_for(lambda: ray.get(host_a.stats.remote())["placed"] == 0)
        # Served by B, with their state; refs still pointing at A follow the directory there.
        for ref in refs:
            assert ref.ask(Notes()) == [1]
        assert ray.get(host_b.stats.remote())["placed"] == 2
    finally:
        ray.kill(host_b, no_restart=True)
