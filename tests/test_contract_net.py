"""The contract net on a real local Ray: work divided among contractors of different capacities, a
bidder SIGKILLed after bidding (before and after its award), and a bidder that never answers."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from runtime.contracts import Announce, ContractorStatus, GetNegotiation, ListNegotiations

from .contract_agents import HangOnAward, Manager, Patient, Silent, Worker
from .waiting import incarnation, wait_for

pytestmark = pytest.mark.ray


def spawn_net(system, prefix: str, contractors: dict[str, tuple[type, dict]], policy: dict):
    refs = {name: system.spawn(cls, f"{prefix}-{name}", init=init) for name, (cls, init) in contractors.items()}
    manager = system.spawn(Manager, f"{prefix}-manager",
                           init={"bidders": [f"{prefix}-{n}" for n in contractors], "policy": policy})
    return manager, refs


def performed(refs) -> dict[str, dict[str, int]]:
    return {ref.agent_id: ref.ask(ContractorStatus(), timeout=30)["performed"] for ref in refs.values()}


def events(neg: dict) -> list[tuple[str, str | None]]:
    return [(h["event"], h.get("bidder") or h.get("awarded_to") or h.get("winner")) for h in neg["history"]]


def test_tasks_are_divided_among_contractors_each_done_exactly_once_and_bigger_ones_win_more(system, agent_id):
    n = 14
    contractors = {"cap1": (Worker, {"capacity": 1}), "cap2": (Worker, {"capacity": 2}),
                   "cap4": (Worker, {"capacity": 4})}
    manager, refs = spawn_net(system, agent_id, contractors,
                              {"bid_seconds": 5, "commit_seconds": 5, "retry_seconds": 0.3, "max_rounds": 60})
    for i in range(n):
        assert not manager.ask(Announce(task_id=f"job-{i:02d}", task={"n": i}), timeout=30)["duplicate"]
    assert manager.ask(Announce(task_id="job-00", task={"n": 0}), timeout=30)["duplicate"], "one task per id"
    wait_for(lambda: manager.ask(ListNegotiations(state="done"), timeout=30).keys() >= {f"job-{i:02d}" for i in range(n)},
             timeout=90, describe=lambda: manager.ask(ListNegotiations(), timeout=30))
    done_by = performed(refs)
    every = [task for tasks in done_by.values() for task in tasks]
    assert sorted(every) == [f"job-{i:02d}" for i in range(n)], "each task performed exactly once, none lost"
    for i in range(n):
        neg = manager.ask(GetNegotiation(task_id=f"job-{i:02d}"), timeout=30)
        assert neg["result"] == {"by": neg["winner"], "task": {"n": i}}
        assert f"job-{i:02d}" in done_by[neg["winner"]]
    wins = Counter({agent: len(tasks) for agent, tasks in done_by.items()})
    assert wins[f"{agent_id}-cap4"] > wins[f"{agent_id}-cap1"], wins
    assert wins[f"{agent_id}-cap4"] >= wins[f"{agent_id}-cap2"], wins
    wait_for(lambda: all(not r.ask(ContractorStatus(), timeout=30)["held"] for r in refs.values()), timeout=30)


def test_a_bidder_sigkilled_after_bidding_before_its_award_performs_the_task_once_after_restart(system, agent_id):
    # "silent" never answers, so bidding stays open until its deadline: the kill falls between bid and award.
    contractors = {"victim": (Worker, {"capacity": 4}), "other": (Worker, {"capacity": 1}), "silent": (Silent, {})}
    manager, refs = spawn_net(system, agent_id, contractors,
                              {"bid_seconds": 4, "commit_seconds": 60, "max_rounds": 1})
    victim = refs["victim"]
    pid = victim.admin.status()["pid"]
    manager.ask(Announce(task_id="t1", task="payload"), timeout=30)
    wait_for(lambda: victim.agent_id in manager.ask(GetNegotiation(task_id="t1"), timeout=30)["bids"], timeout=30)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    neg = wait_for(lambda: (g := manager.ask(GetNegotiation(task_id="t1"), timeout=30))["state"] == "done" and g,
                   timeout=90, describe=lambda: manager.ask(GetNegotiation(task_id="t1"), timeout=30))
    assert neg["winner"] == victim.agent_id and neg["result"] == {"by": victim.agent_id, "task": "payload"}
    [award] = [h for h in neg["history"] if h["event"] == "awarded"]
    assert award["awarded_to"] == victim.agent_id and award["at"] > killed_at, "awarded after the kill"
    assert victim.admin.status()["incarnation"] == 2, "the victim was killed and restarted"
    assert performed(refs) == {victim.agent_id: {"t1": 1}, refs["other"].agent_id: {}, refs["silent"].agent_id: {}}
    assert ("passed_over", victim.agent_id) not in events(neg)
    wait_for(lambda: not refs["other"].ask(ContractorStatus(), timeout=30)["held"], timeout=30)  # the loser released


def test_a_bidder_sigkilled_after_its_award_leaves_the_task_done_once(system, agent_id, tmp_path):
    contractors = {"victim": (HangOnAward, {"capacity": 4, "marker_dir": str(tmp_path)}),
                   "other": (Worker, {"capacity": 1})}
    manager, refs = spawn_net(system, agent_id, contractors,
                              {"bid_seconds": 10, "commit_seconds": 1.5, "max_rounds": 2})
    victim = refs["victim"]
    pid = victim.admin.status()["pid"]
    manager.ask(Announce(task_id="t1", task="payload"), timeout=30)
    wait_for(lambda: (tmp_path / victim.agent_id).exists(), timeout=30,
             describe=lambda: manager.ask(GetNegotiation(task_id="t1"), timeout=30))
    os.kill(pid, signal.SIGKILL)  # awarded, stuck before committing
    neg = wait_for(lambda: (g := manager.ask(GetNegotiation(task_id="t1"), timeout=30))["state"] == "done" and g,
                   timeout=90, describe=lambda: manager.ask(GetNegotiation(task_id="t1"), timeout=30))
    wait_for(lambda: incarnation(victim) == 2, timeout=60)
    # Whoever performed it, exactly one did, and it is the committed winner.
    wait_for(lambda: not victim.ask(ContractorStatus(), timeout=30)["held"], timeout=60)  # the victim released
    done_by = {agent: tasks for agent, tasks in performed(refs).items() if tasks}
    assert list(done_by) == [neg["winner"]] and done_by[neg["winner"]] == {"t1": neg["round"]}
    awards = [who for event, who in events(neg) if event == "awarded"]
    assert awards[0] == victim.agent_id, "the victim (more room, lower cost) was awarded first"
    if neg["winner"] == refs["other"].agent_id:  # the commit deadline passed while the victim was down
        assert ("passed_over", victim.agent_id) in events(neg) and ("awarded", neg["winner"]) in events(neg)
    else:  # the restarted victim came back in time, and committed
        assert ("committed", victim.agent_id) in events(neg)


def test_a_bidder_that_never_answers_is_left_out_once_the_deadline_passes(system, agent_id):
    contractors = {"silent": (Silent, {"capacity": 8}), "a": (Worker, {"capacity": 1}),
                   "b": (Worker, {"capacity": 2})}
    manager, refs = spawn_net(system, agent_id, contractors, {"bid_seconds": 1.5, "commit_seconds": 10})
    manager.ask(Announce(task_id="t1", task=7), timeout=30)
    neg = wait_for(lambda: (g := manager.ask(GetNegotiation(task_id="t1"), timeout=30))["state"] == "done" and g,
                   timeout=60, describe=lambda: manager.ask(GetNegotiation(task_id="t1"), timeout=30))
    assert sorted(neg["bids"]) == [refs["a"].agent_id, refs["b"].agent_id], "the silent bidder never bid"
    [closed] = [h for h in neg["history"] if h["event"] == "closed"]
    assert closed["why"] == "bid deadline"
    assert neg["winner"] == refs["b"].agent_id, "b has more room: cost 1/2 against a's 1/1"
    assert performed(refs) == {refs["silent"].agent_id: {}, refs["a"].agent_id: {}, refs["b"].agent_id: {"t1": 1}}


def test_a_task_announced_by_an_ask_with_a_short_timeout_finishes_after_that_deadline(system, agent_id):
    """The negotiation's messages do not inherit the announcing ask's deadline: its Done, sent after
    that deadline, still counts (it used to arrive expired, a dead letter, the task stuck ``committed``)."""
    manager, refs = spawn_net(system, agent_id, {"p": (Patient, {"capacity": 1})},
                              {"bid_seconds": 5, "commit_seconds": 10})
    asked = time.time()
    task = {"n": 1, "not_before": asked + 6}
    assert manager.ask(Announce(task_id="t1", task=task), timeout=5)["duplicate"] is False
    neg = wait_for(lambda: (g := manager.ask(GetNegotiation(task_id="t1"), timeout=30))["state"] == "done" and g,
                   timeout=60, describe=lambda: (manager.ask(GetNegotiation(task_id="t1"), timeout=30),
                                                 manager.admin.dead_letters()))
    assert neg["result"] == {"by": refs["p"].agent_id, "task": task}
    assert time.time() > asked + 5, "the Done came after the announcing ask's deadline"
    assert manager.admin.dead_letters() == [] and refs["p"].admin.dead_letters() == []
