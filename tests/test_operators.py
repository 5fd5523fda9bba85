"""Operators as identities on a real local Ray: an agent, an approval queue and a supervisor, each
behind an operators file; keys made by ``garrison operators keygen``, calls made from Python and
from the ``garrison`` CLI (a real subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from audit import Forbidden, OperatorKey, Unauthenticated
from governance import RiskPolicy
from runtime import AgentConfig, AgentNotRunning, Approvals
from supervisors import ChildSpec, SupervisorFlags, SupervisorSpec, halt, start_supervisor
from tests.agents import Add, Counter, GetCount
from tests.gov_agents import Act, Clerk, Decisions, ForgeableQueue
from tests.sup_agents import FAST, Bump, Worker, uid
from tests.waiting import wait_for

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, address: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisors.cli", *args, *(["--address", address] if address else [])],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "GARRISON_JSON": "1"},
                          check=False)


@pytest.fixture
def people(tmp_path):
    """Keys for alice (approver), bob (operator) and root (admin), made by the CLI; the operators file."""
    entries, keys = [], {}
    for name, role in (("alice", "approver"), ("bob", "operator"), ("root", "admin")):
        out = _cli("operators", "keygen", name, "--role", role, "--out", str(tmp_path / f"{name}.key"))
        assert out.returncode == 0, out.stderr
        entries.append(json.loads(out.stdout)["entry"])  # --json (GARRISON_JSON): the entry as one field
        keys[name] = OperatorKey.load(tmp_path / f"{name}.key", name)
    path = tmp_path / "operators.toml"
    path.write_text("\n".join(entries))
    checked = _cli("operators", "check", str(path))
    assert checked.returncode == 0 and '"approve"' in checked.stdout, checked.stderr
    return path, keys


def _auth(key: OperatorKey) -> str:
    return f"ed25519:{key.verifier.key_id.hex()}"


def test_an_agents_operator_calls_need_a_signed_credential_and_a_role(system, people):
    path, keys = people
    ref = system.spawn(Counter, f"t-{uuid.uuid4().hex[:8]}", config=AgentConfig(operators=str(path)))
    ref.ask(Add(n=2))
    with pytest.raises(Unauthenticated) as bare:
        ref.admin.halt("bob", "a name is not enough")
    assert bare.value.check == "malformed" and "--key" in str(bare.value)
    with pytest.raises(Forbidden) as forbidden:
        ref.admin.halt(keys["alice"], "approvers do not pull kill switches")
    assert forbidden.value.check == "role"
    assert ref.admin.status()["state"] == "running", "a refused call changed nothing"

    assert ref.admin.halt(keys["bob"], "incident 9")["state"] == "halted"
    with pytest.raises(AgentNotRunning, match="halted by bob"):
        ref.ask(GetCount())
    assert ref.admin.unhalt(keys["root"], "resolved")["state"] == "running"
    assert ref.ask(GetCount()) == 2
    log = [(e["action"], e["who"], e["auth"]) for e in ref.admin.operator_log()]
    assert log == [("halt", "bob", _auth(keys["bob"])), ("unhalt", "root", _auth(keys["root"]))]


def test_only_an_approver_approves_and_the_queue_records_who_with_their_key(system, people, tmp_path):
    path, keys = people
    tag = uuid.uuid4().hex[:6]
    queue = system.spawn(ForgeableQueue, f"approvals-{tag}", config=AgentConfig(operators=str(path)))
    approvals = Approvals(system, queue.agent_id)
    shop = system.spawn(Clerk, f"shop-{tag}", config=AgentConfig(
        grants=("payments.refund",), approvals=queue.agent_id, risk_policy=RiskPolicy(version="1")))
    log = tmp_path / "calls"
    [pending] = shop.ask(Act(actions=[{"kind": "refund", "order": "A1", "amount": 500, "log": str(log)}]))
    approval_id = pending["approval_id"]
    wait_for(lambda: [r["id"] for r in approvals.list()] == [approval_id], timeout=60)

    with pytest.raises(Unauthenticated):
        approvals.approve(approval_id, who="alice")  # a name, not a credential
    with pytest.raises(Forbidden):
        approvals.approve(approval_id, who=keys["bob"])  # an operator, not an approver
    assert approvals.show(approval_id)["state"] == "pending"

    approved = approvals.approve(approval_id, who=keys["alice"])
    assert approved["state"] == "approved" and approved["approvals"][0]["who"] == "alice"
    wait_for(lambda: approval_id in shop.ask(Decisions(), timeout=30)["outcomes"], timeout=120)
    assert shop.ask(Decisions())["outcomes"][approval_id]["code"] == "ok"
    [made] = queue.admin.decisions()
    assert (made["choice"], made["context"]["who"], made["context"]["auth"]) == \
        ("approve", "alice", _auth(keys["alice"]))


def test_a_supervisor_admits_the_operator_and_its_agents_record_who_with_their_key(data_dir, refs, people,
                                                                                   ray_session):
    path, keys = people
    worker = uid("w")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST,
                                                               operators=str(path)),
                          children=[ChildSpec(id=worker, agent=Worker)])
    sup = start_supervisor(spec, data_dir=data_dir)
    refs.append(sup)
    from runtime import System

    agent = System(data_dir).lookup(worker)
    assert agent.ask(Bump(n=1)) == 1
    with pytest.raises(Unauthenticated):
        halt("mallory", "no key", supervisor=spec.id)
    with pytest.raises(Forbidden):
        halt(keys["alice"], "wrong role", agent=worker, supervisor=spec.id)
    # Straight to the agent: it inherited the supervisor's operators file.
    with pytest.raises(Unauthenticated):
        agent.admin.halt("mallory", "around the supervisor")
    assert sup.child(worker)["state"] == "running"

    # The CLI, as an operator on call runs it: their key from the environment.
    address = ray_session.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-m", "supervisors.cli", "kill", "--supervisor", spec.id, "--who", "bob",
                          "--why", "incident 12", "--address", address], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=False,
                         env={**os.environ, "GARRISON_OPERATOR_KEY": str(path.parent / "bob.key")})
    assert out.returncode == 0, out.stderr[-1500:]
    assert sup.child(worker)["state"] == "halted"
    refused = _cli("unhalt", "--supervisor", spec.id, "--who", "bob", "--why", "no key given", address=address)
    assert refused.returncode == 2 and "Unauthenticated" in refused.stderr
    sup.unhalt(keys["root"], "resolved")
    assert sup.child(worker)["state"] == "running"
    log = [(e["action"], e["who"], e["auth"]) for e in agent.admin.operator_log()]
    assert log == [("halt", "bob", _auth(keys["bob"])), ("unhalt", "root", _auth(keys["root"]))]
