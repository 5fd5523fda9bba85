"""Human approval end to end: real agents on a real Ray, real SIGKILLs.

The queue is a Garrison agent; the requesting agent's gateway stages the
request with its handler's changes; a person approves through ``Approvals``
(what ``garrison approvals`` calls); the decision arrives at the agent as a
message and its handler resumes the action, which the gateway checks with
the queue and executes once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from governance import Risk, RiskPolicy
from runtime import AgentConfig, Approvals
from runtime._approvals import DecideApproval

from .gov_agents import Act, Clerk, Decisions, Forge, ForgeableQueue
from .waiting import incarnation, wait_for

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def _calls(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _config(queue: str, **policy) -> AgentConfig:
    return AgentConfig(grants=("payments.refund", "db.admin"), approvals=queue,
                       risk_policy=RiskPolicy(version=policy.pop("version", "1"), **policy))


def _sigkill(ref) -> None:
    """SIGKILL the agent's process and wait until Ray has brought it back (its next incarnation answers)."""
    before = ref.admin.status()
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: (incarnation(ref) or 0) > before["incarnation"], timeout=120)


def _queued(approvals, approval_id: str) -> str:
    """Wait until the request (sent through the agent's outbox after its handler committed) is in the queue."""
    wait_for(lambda: any(r["id"] == approval_id for r in approvals.list(state=None)), timeout=60)
    return approval_id


def _refund(log, amount=500, order="A1") -> dict:
    return {"kind": "refund", "order": order, "amount": amount, "log": str(log)}


@pytest.fixture
def desk(system, tmp_path):
    tag = uuid.uuid4().hex[:6]
    queue = system.spawn(ForgeableQueue, f"approvals-{tag}")
    return system, queue, Approvals(system, queue.agent_id), f"shop-{tag}", tmp_path / "calls"


def test_a_pending_approval_survives_sigkills_and_the_approved_action_executes_once(desk):
    system, queue, approvals, shop_id, log = desk
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id))
    [pending] = shop.ask(Act(actions=[_refund(log)]))
    assert pending["code"] == "pending" and pending["escalation"] == "human"
    approval_id = pending["approval_id"]
    wait_for(lambda: [r["id"] for r in approvals.list()] == [approval_id])
    _sigkill(queue)
    _sigkill(shop)
    [req] = approvals.list()
    assert req["id"] == approval_id and req["state"] == "pending" and req["agent_id"] == shop_id
    assert req["arguments"]["amount"] == 500 and req["context"] == "test ticket"
    # The agent is SIGKILLed between the approval and the execution: the decision waits in
    # the queue's outbox and reaches the next incarnation.
    os.kill(shop.admin.status()["pid"], signal.SIGKILL)
    approved = approvals.approve(approval_id, who="alice")
    assert approved["state"] == "approved" and approved["approvals"][0]["who"] == "alice"
    assert approvals.approve(approval_id, who="alice")["state"] == "approved"  # a duplicate approve
    assert approvals.approve(approval_id, who="bob")["state"] == "approved"    # already approved
    wait_for(lambda: approval_id in shop.ask(Decisions(), timeout=30)["outcomes"], timeout=120)
    outcome = shop.ask(Decisions())["outcomes"][approval_id]
    assert outcome["code"] == "ok" and outcome["result"] == {"refunded": 500}
    # A later decision on the same pair is handled after any duplicate of the first (per-pair
    # order), so once it is in, a second execution would have shown.
    [other] = shop.ask(Act(actions=[_refund(log, order="A2")]))
    approvals.deny(_queued(approvals, other["approval_id"]), who="carol", why="not this one")
    wait_for(lambda: other["approval_id"] in shop.ask(Decisions())["outcomes"], timeout=120)
    decided = shop.ask(Decisions())
    assert decided["outcomes"][other["approval_id"]]["code"] == "denied"
    assert "carol" in decided["outcomes"][other["approval_id"]]["reason"]
    assert _calls(log) == ["refund A1 500"], "executed once, and the denied one never"
    assert decided["handled"] == 2
    # The queue's audit log: each approval and denial that changed a request, once, with who.
    made = [(d["choice"], d["context"]["who"], d["context"]["approval"]) for d in queue.admin.decisions()]
    assert made == [("approve", "alice", approval_id), ("deny", "carol", other["approval_id"])]


def test_an_approval_is_void_when_the_arguments_policy_or_config_change(desk):
    system, queue, approvals, shop_id, log = desk
    manual = {"auto_resume": False}  # decisions are noted; the test resumes each one itself
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id), init=manual)
    ids = [shop.ask(Act(actions=[_refund(log, order=f"V{i}")]))[0]["approval_id"] for i in range(3)]
    for approval_id in ids:
        approvals.approve(_queued(approvals, approval_id), who="alice")
    wait_for(lambda: len(shop.ask(Decisions())["outcomes"]) == 3, timeout=120)

    def resume(approval_id, **change):
        return shop.ask(Act(actions=[{**_refund(log, order=f"V{ids.index(approval_id)}"), **change,
                                      "approval": approval_id}]))[0]

    changed = resume(ids[0], amount=501)  # other arguments than the ones approved
    assert changed["code"] == "denied" and "void" in changed["reason"]
    assert resume(ids[0])["code"] == "denied", "a void approval stays void"
    assert resume(ids[1])["code"] == "ok"
    assert resume(ids[1])["code"] == "ok"  # resumed twice: the recorded outcome, no second call
    assert _calls(log) == ["refund V1 500"]
    # A new policy version voids what was approved under the old one.
    system.stop(shop_id)
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id, version="2"), init=manual)
    by_policy = resume(ids[2])
    assert by_policy["code"] == "denied" and "void" in by_policy["reason"]
    # So does a new agent config (here its config_version).
    [fresh] = shop.ask(Act(actions=[_refund(log, order="V3")]))
    ids.append(fresh["approval_id"])
    approvals.approve(_queued(approvals, fresh["approval_id"]), who="alice")
    wait_for(lambda: fresh["approval_id"] in shop.ask(Decisions())["outcomes"], timeout=120)
    system.stop(shop_id)
    config = _config(queue.agent_id, version="2").model_copy(update={"config_version": "2"})
    shop = system.spawn(Clerk, shop_id, config=config, init=manual)
    by_config = resume(fresh["approval_id"])
    assert by_config["code"] == "denied" and "void" in by_config["reason"]
    assert _calls(log) == ["refund V1 500"]


def test_expiry_reaches_the_agent_from_the_queues_timer_with_nobody_touching_the_queue(desk):
    system, queue, approvals, shop_id, log = desk
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id, approval_ttl=2.0))
    [expiring] = shop.ask(Act(actions=[_refund(log, order="T1")]))
    # Nobody decides and nobody asks the queue anything: its timer sweeps, and the agent is told.
    wait_for(lambda: expiring["approval_id"] in shop.ask(Decisions())["outcomes"], timeout=120)
    assert shop.ask(Decisions())["outcomes"][expiring["approval_id"]]["code"] == "expired"
    [expired] = approvals.list(state="expired")
    assert expired["id"] == expiring["approval_id"]
    with pytest.raises(Exception, match="expired"):
        approvals.approve(expiring["approval_id"], who="alice")
    assert _calls(log) == []


def test_a_decision_reaches_an_agent_that_was_down_past_the_deciding_asks_deadline(desk):
    """The decision is not bound to the deadline of the ask that made it: an agent stopped while a
    person approved with a 5 s timeout, and started again after that, still executes the action."""
    system, queue, approvals, shop_id, log = desk
    config = _config(queue.agent_id)
    shop = system.spawn(Clerk, shop_id, config=config)
    [pending] = shop.ask(Act(actions=[_refund(log, order="D1")]))
    approval_id = _queued(approvals, pending["approval_id"])
    system.stop(shop_id)
    asked = time.time()
    decided = queue.ask(DecideApproval(approval_id=approval_id, verdict="approve", why="", who="alice"), timeout=5)
    assert decided["state"] == "approved"
    wait_for(lambda: time.time() > asked + 6, timeout=30)  # the condition is that deadline itself
    shop = system.spawn(Clerk, shop_id, config=config)
    wait_for(lambda: approval_id in shop.ask(Decisions(), timeout=30)["outcomes"], timeout=120,
             describe=lambda: (shop.admin.dead_letters(), queue.admin.status()["outbox_pending"]))
    assert shop.ask(Decisions())["outcomes"][approval_id]["code"] == "ok"
    assert _calls(log) == ["refund D1 500"] and shop.admin.dead_letters() == []


def test_a_policy_needing_two_approvers_executes_after_the_second_distinct_one_once(desk):
    system, queue, approvals, shop_id, log = desk
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id, approvals_required=2))
    [pending] = shop.ask(Act(actions=[_refund(log, order="W2")]))
    approval_id = _queued(approvals, pending["approval_id"])
    assert approvals.approve(approval_id, who="alice")["state"] == "pending"
    assert approvals.approve(approval_id, who="Alice ")["state"] == "pending", "the same person twice is one"
    with pytest.raises(Exception, match="cannot approve its own"):
        approvals.approve(approval_id, who=shop_id)
    decided = approvals.approve(approval_id, who="bob")
    assert decided["state"] == "approved" and [a["who"] for a in decided["approvals"]] == ["alice", "bob"]
    wait_for(lambda: approval_id in shop.ask(Decisions())["outcomes"], timeout=120)
    assert shop.ask(Decisions())["outcomes"][approval_id]["code"] == "ok"
    assert approvals.approve(approval_id, who="carol")["state"] == "approved"  # a late third: no second run
    assert shop.ask(Act(actions=[{**_refund(log, order="W2"), "approval": approval_id}]))[0]["code"] == "ok"
    assert _calls(log) == ["refund W2 500"]


def test_a_prohibited_action_never_runs_even_with_a_forged_approval(desk):
    system, queue, approvals, shop_id, log = desk
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id))
    # What an approval for a refund looks like, then rewritten as an approved wipe.
    [pending] = shop.ask(Act(actions=[_refund(log)]))
    real = approvals.approve(_queued(approvals, pending["approval_id"]), who="alice")
    forged = {**real, "id": "forged-1", "action": "govtest.wipe@1", "arguments": {"log": str(log)}}
    queue.ask(Forge(request=forged))
    assert approvals.show("forged-1")["state"] == "approved"
    [outcome] = shop.ask(Act(actions=[{"kind": "wipe", "log": str(log), "approval": "forged-1"}]))
    assert outcome["code"] == "refused" and "prohibited" in outcome["reason"]
    wait_for(lambda: pending["approval_id"] in shop.ask(Decisions())["outcomes"], timeout=120)
    assert _calls(log) == ["refund A1 500"]
    assert Risk.PROHIBITED > Risk.HIGH


def test_people_list_and_approve_from_the_console_script(desk, ray_session):
    system, queue, approvals, shop_id, log = desk
    shop = system.spawn(Clerk, shop_id, config=_config(queue.agent_id))
    [pending] = shop.ask(Act(actions=[_refund(log, order="C1")]))
    approval_id = _queued(approvals, pending["approval_id"])
    address = ray_session.get_runtime_context().gcs_address

    def garrison(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "supervisors.cli", "approvals", *args,
                               "--queue", queue.agent_id, "--address", address, "--json"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ})

    listed = garrison("list")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [approval_id]
    assert _pending_gauge(queue) == 1.0, "the queue's garrison_approvals_pending says one waits"
    refused = garrison("approve", approval_id, "--who", shop_id)  # an agent cannot approve its own request
    assert refused.returncode == 2 and "ApprovalError" in refused.stderr
    done = garrison("approve", approval_id, "--who", "alice")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "approved"
    wait_for(lambda: approval_id in shop.ask(Decisions())["outcomes"], timeout=120)
    assert shop.ask(Decisions())["outcomes"][approval_id]["code"] == "ok"
    assert _calls(log) == ["refund C1 500"]
    assert garrison("list").stdout.strip() == "[]"
    assert _pending_gauge(queue) == 0.0


def _pending_gauge(queue) -> float:
    """The approval queue's own gauge, from its metrics (what Ray's export and a Prometheus get)."""
    from prometheus_client.parser import text_string_to_metric_families

    return next(s.value for f in text_string_to_metric_families(queue.admin.metrics()) for s in f.samples
                if s.name == "garrison_approvals_pending")
