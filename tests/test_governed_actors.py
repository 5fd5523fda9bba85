"""Governed actions of agents on a real Ray: breakers, drift, review limits, a model server, an MCP server.

The in-process tests (``test_gateway``, ``test_gov_models``, ``test_gov_mcp``)
cover each rule in detail; these check that the same rules hold where users
run them: in an agent's own Ray worker, under a supervisor whose notifiers
tell operators, driven through ``AgentRef`` and the ``garrison`` console
script, with the model server on loopback and the MCP server a process the
agent's worker starts itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading

import pytest

from governance import BreakerPolicy, DriftPolicy, RiskPolicy
from governance.mcp import McpServer, mcp_actions
from runtime import AgentConfig, AgentState
from supervisors import ChildSpec, JsonlNotifier, ProbePolicy, SupervisorFlags, SupervisorSpec, start_supervisor

from .gov_agents import Act, Clerk, ReconcilingClerk, WatchedClerk
from .openai_server import OpenAIServer
from .sup_agents import FAST, uid
from .test_cli import console
from .test_gov_mcp import CONFIG as MCP_CONFIG
from .test_gov_mcp import SERVER as MCP_SERVER
from .test_gov_mcp import McpUser, Use
from .test_gov_models import PRICES, Ask, Asker
from .waiting import wait_for

pytestmark = pytest.mark.ray

GRANTS = ("payments.refund", "shipping.*", "crm.note", "db.admin")


def _calls(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _governance(ref) -> dict:
    return ref.admin.status()["governance"]


def _codes(ref, *actions: dict) -> list[str]:
    return [o["code"] for o in ref.ask(Act(actions=list(actions)), timeout=60)]


def test_a_breaker_trip_alerts_the_supervisors_notifiers_then_probes_half_open_and_closes_or_reopens(
        system, tmp_path, refs, ray_session):
    alerts = JsonlNotifier(tmp_path / "alerts.jsonl", alerts_only=True)
    quick = BreakerPolicy(consecutive_failures=2, failure_rate=None, open_for=0.5, open_for_max=0.5)
    cid = uid("clerk")
    spec = SupervisorSpec(id=uid("sup"), flags=SupervisorFlags(intensity=5, period=60, backoff=FAST), children=[
        ChildSpec(id=cid, agent=Clerk, config=AgentConfig(grants=GRANTS, breaker=quick),
                  probe=ProbePolicy(interval=0.1, timeout=5.0))])
    refs.append(start_supervisor(spec, data_dir=system.data_dir, notifiers=[alerts]))
    clerk = system.lookup(cid)
    log = tmp_path / "calls"
    good = {"kind": "refund", "order": "G", "amount": 1, "log": str(log)}
    error = {**good, "order": "E", "fail": "error"}
    business = {**good, "order": "B", "fail": "business"}

    # Declared business errors do not count; failures do, and the third call never reaches the tool.
    assert _codes(clerk, business, business, business) == ["failed"] * 3
    assert _governance(clerk)["open_breakers"] == []
    assert _codes(clerk, error, error, good) == ["failed", "failed", "breaker_open"]
    assert len(_calls(log)) == 5
    [alert] = wait_for(lambda: [e for e in alerts.read() if e["kind"] == "breaker_tripped"], timeout=60)
    assert alert["child"] == cid and alert["who"] == "breaker" and alert["alert"] is True
    assert alert["details"]["count"] == 2 and {t["breaker"] for t in alert["details"]["recent"]} == \
        {"agent", "govtest.refund@1"}, "both breakers the calls went through opened"
    assert "consecutive_failures" in alert["why"]

    # After open_for, one probe goes through (half open) and its success closes the breakers.
    seen: list[str] = []
    wait_for(lambda: seen.append(_codes(clerk, good)[0]) or seen[-1] != "breaker_open", timeout=60)
    assert seen[-1] == "ok" and set(seen[:-1]) <= {"breaker_open"}
    assert len(_calls(log)) == 6, "only the probe reached the tool"
    assert _governance(clerk)["open_breakers"] == []

    # Tripped again (a second alert); this time the probe fails and the breakers reopen.
    assert _codes(clerk, error, error) == ["failed", "failed"]
    seen.clear()
    wait_for(lambda: seen.append(_codes(clerk, error)[0]) or seen[-1] != "breaker_open", timeout=60)
    assert seen[-1] == "failed" and _codes(clerk, good) == ["breaker_open"]
    wait_for(lambda: len([e for e in alerts.read() if e["kind"] == "breaker_tripped"]) == 2, timeout=60)

    # An operator closes them from the console, recorded with who; the ledger shows every call once.
    address = ray_session.get_runtime_context().gcs_address
    for breaker in ("agent", "govtest.refund@1"):
        out = console("reset-breaker", cid, breaker, "--who", "alice@ops", address=address)
        assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["open_breakers"] == []
    assert _codes(clerk, good) == ["ok"]
    resets = [e for e in clerk.admin.operator_log() if e["action"] == "reset_breaker"]
    assert [(e["who"], e["why"]) for e in resets] == [("alice@ops", "agent breaker closed"),
                                                      ("alice@ops", "govtest.refund@1 breaker closed")]
    out = console("ledger", cid, "--limit", "0", address=address)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert len(entries) == len(_calls(log)) == 10, "one intent per call that reached the tool"
    assert len({e["key"] for e in entries}) == 10 and all(e["outcome"] is not None for e in entries)
    assert [e["outcome"]["code"] for e in entries].count("ok") == 2  # the closing probe, the call after the reset
    assert clerk.admin.ledger(in_doubt=True) == [] and _governance(clerk)["in_doubt"] == 0


def test_a_drifting_agent_trips_its_semantic_breaker_and_pulls_its_own_kill_switch(system, tmp_path):
    log = tmp_path / "calls"
    clerk = system.spawn(WatchedClerk, uid("writer"), config=AgentConfig(
        grants=GRANTS, drift=DriftPolicy(window=4, min_samples=2, threshold=0.5), on_trip="halt"))

    def write(text):
        return {"kind": "write", "text": text, "log": str(log)}

    assert _codes(clerk, *[write(f"your order {i} ships monday") for i in range(4)]) == ["ok"] * 4
    assert _codes(clerk, write("we refund everyone"), write("refund everyone now"), write("hi")) == \
        ["ok", "ok", "breaker_open"]
    assert len(_calls(log)) == 6
    wait_for(lambda: clerk.admin.status()["state"] == AgentState.HALTED.value, timeout=60)
    [halt] = [e for e in clerk.admin.operator_log() if e["action"] == "halt"]
    assert halt["who"] == "breaker" and "drift breaker tripped" in halt["why"]
    assert _governance(clerk)["breakers"]["drift"] == "open"


def test_medium_actions_past_the_unreviewed_limit_block_until_someone_reviews_them(system, tmp_path):
    log = tmp_path / "calls"
    clerk = system.spawn(Clerk, uid("noter"), config=AgentConfig(
        grants=GRANTS, risk_policy=RiskPolicy(version="7", medium_unreviewed_limit=2)))
    note = {"kind": "audit", "note": "n", "log": str(log)}
    [first, second, third] = clerk.ask(Act(actions=[note, note, note]), timeout=60)
    assert (first["code"], second["code"]) == ("ok", "ok")
    assert third["code"] != "ok" and third["escalation"] == "human"
    assert len(_calls(log)) == 2 and _governance(clerk)["unreviewed_medium"] == 2
    assert clerk.admin.review_actions("bob@ops") == {"unreviewed_medium": 0}
    assert [e["who"] for e in clerk.admin.operator_log() if e["action"] == "review"] == ["bob@ops"]
    assert _codes(clerk, note) == ["ok"] and len(_calls(log)) == 3


def test_a_chat_model_on_loopback_through_an_agents_gateway_is_costed_and_recorded(system):
    with OpenAIServer() as server:
        from governance.models import ChatCompletion, ChatModel
        model = ChatModel(server.base_url, api_key="sk-test", prices=PRICES, timeout=10)
        agent = type("ModelUser", (Asker,), {"tools": {ChatCompletion: model}})
        ref = system.spawn(agent, uid("asker"), config=AgentConfig(grants=("model.chat",)))
        chat = {"model": "echo-1", "messages": [{"role": "user", "content": "where is my parcel"}], "max_tokens": 50}
        [outcome] = ref.ask(Ask(requests=[chat]), timeout=60)
        assert outcome["code"] == "ok" and outcome["result"]["content"] == "echo: where is my parcel"
        assert len(server.requests) == 1
        # The loopback server counts words as tokens; PRICES are per 1,000 tokens.
        assert outcome["result"]["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
        assert outcome["cost"] == pytest.approx(4 / 1000 * 0.5 + 5 / 1000 * 1.5)
        [entry] = ref.admin.ledger()
        assert entry["tag"] == ChatCompletion.type_tag() and entry["outcome"]["cost"] == outcome["cost"]


def test_mcp_tools_run_in_the_agents_worker_against_a_local_server_process(system, tmp_path):
    calls = tmp_path / "calls"
    server = McpServer("shop", command=[sys.executable, str(MCP_SERVER), str(calls)], timeout=30)
    tools = mcp_actions(server, MCP_CONFIG)
    agent = type("McpUserOnRay", (McpUser,), {"tools": tools})
    ref = system.spawn(agent, uid("mcp"), config=AgentConfig(grants=("calc.add", "shop.read")))
    outcomes = ref.ask(Use(calls=[{"action": "mcp.shop.add", "arguments": {"a": 2, "b": 3}},
                                  {"action": "mcp.shop.refund", "arguments": {"order": "A1"}}]), timeout=120)
    assert [o["code"] for o in outcomes] == ["ok", "refused"]
    assert outcomes[0]["result"]["text"] == "5" and outcomes[0]["cost"] == 0.25
    assert calls.read_text().splitlines() == ['add {"a": 2, "b": 3}'], "the refused one never reached the server"
    [entry] = ref.admin.ledger()
    assert entry["tag"] == "mcp.shop.add@1" and entry["outcome"]["code"] == "ok"


@pytest.mark.parametrize("kind, cls, want, calls", [
    ("ship", Clerk, "ok", 2),                      # idempotent: called again, same key
    ("refund", Clerk, "unknown", 1),               # not idempotent, no hook: escalated, not repeated
    ("refund", ReconcilingClerk, "ok", 1),         # the hook finds it happened: not repeated
], ids=["idempotent-recalled", "unknown-escalated", "reconciled"])
def test_an_agent_sigkilled_during_a_tool_call_never_repeats_it_blindly(system, tmp_path, kind, cls, want, calls):
    log, gate = tmp_path / "calls", tmp_path / "gate"
    clerk = system.spawn(cls, uid("cut"), config=AgentConfig(grants=GRANTS))
    action = {"kind": kind, "order": "K1", "log": str(log), "block": str(gate),
              **({"amount": 10} if kind == "refund" else {})}
    answer: dict = {}
    with open(gate, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the tool waits on it, its line written
        pid = clerk.admin.status()["pid"]
        asking = threading.Thread(target=lambda: answer.update(
            outcomes=clerk.ask(Act(actions=[action]), timeout=120)), daemon=True)
        asking.start()
        wait_for(lambda: len(_calls(log)) == 1, timeout=60)
        os.kill(pid, signal.SIGKILL)  # Ray restarts the actor; the ask follows it with the same message
        fcntl.flock(held, fcntl.LOCK_UN)  # the dead process can no longer pass; a re-call may
    asking.join(timeout=180)
    [outcome] = answer["outcomes"]
    assert outcome["code"] == want, outcome
    if want == "unknown":
        assert outcome["escalation"] == "human" and "not repeated" in outcome["reason"]
    lines = _calls(log)
    assert len(lines) == calls, lines
    if kind == "ship":
        assert lines[0] == lines[1], "the same idempotency key both times"
    assert clerk.admin.status()["pid"] != pid
    [entry] = clerk.admin.ledger()
    assert entry["outcome"]["code"] == want and clerk.admin.ledger(in_doubt=True) == []
