"""The gateway in a real agent host (``AgentCore``, real LMDB), without Ray.

What the gateway refuses never reaches the tool (its log file stays empty);
what it runs is in the ledger once, with its outcome; a message handled
again gets the recorded outcome back; a process SIGKILLed during a call
leaves an intent that the next incarnation never repeats blindly.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from audit import read_log, verify_log
from governance import BehaviourPolicy, BreakerPolicy, BudgetPolicy, DriftPolicy, RiskPolicy
from protocols import encode_envelope, make_envelope
from runtime import AgentConfig, AgentState, ConfigError, StateError
from runtime._core import AgentCore
from runtime._ledger import Ledger
from runtime._reply import decode_reply
from runtime._spec import HostSpec

from .gov_agents import Act, ActThenFail, Clerk, ReconcilingClerk, WatchedClerk
from .waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _spec(tmp_path, cls=Clerk, **config) -> HostSpec:
    for d in ("data", "ck"):
        (tmp_path / d).mkdir(exist_ok=True)
    config.setdefault("grants", ("payments.refund", "shipping.*", "crm.note", "db.admin"))
    return HostSpec("clerk", cls, str(tmp_path / "data"), str(tmp_path / "ck"), config=AgentConfig(**config))


def _act(core: AgentCore, *actions: dict, raw: bytes | None = None) -> list[dict]:
    raw = raw or encode_envelope(make_envelope(Act(actions=list(actions)), "clerk"))
    ok, value = decode_reply(core.deliver(raw))
    assert ok, value
    return value


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_refusals_happen_before_any_work(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, grants=("shipping.create",)))
    try:
        outcomes = _act(core, {"kind": "refund", "order": "A1", "amount": 5, "log": str(log)},
                        {"kind": "wipe", "log": str(log)})
        assert [o["code"] for o in outcomes] == ["refused", "refused"]
        assert "payments.refund" in outcomes[0]["reason"]
        assert _calls(log) == []
        assert core.gateway.status()["grants"] == ["shipping.create"]
        assert core.gateway.status()["in_doubt"] == 0
    finally:
        core.stop()


def test_a_prohibited_action_never_runs_even_when_granted(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path))  # db.admin granted
    try:
        [outcome] = _act(core, {"kind": "wipe", "log": str(log)})
        assert outcome["code"] == "refused" and "prohibited" in outcome["reason"]
        assert _calls(log) == []
    finally:
        core.stop()


def test_an_action_runs_once_and_a_redelivered_message_gets_its_recorded_outcome(tmp_path):
    log = tmp_path / "calls"
    raw = encode_envelope(make_envelope(Act(actions=[
        {"kind": "refund", "order": "A1", "amount": 80, "log": str(log)},
        {"kind": "ship", "order": "A1", "log": str(log)}]), "clerk"))
    core = AgentCore(_spec(tmp_path))
    try:
        first = _act(core, raw=raw)
        assert [o["code"] for o in first] == ["ok", "ok"]
        assert first[0]["result"] == {"refunded": 80} and first[0]["cost"] == 0.8
        assert first[1]["cost"] == 0.5  # the tool's actual cost, not the estimate
    finally:
        core.stop()
    # A new incarnation handling the same message id (the effectively-once reply is remembered,
    # so deliver answers from it): neither tool runs again.
    core = AgentCore(_spec(tmp_path))
    try:
        assert _act(core, raw=raw) == first
    finally:
        core.stop()
    assert _calls(log) == ["refund A1 80", f"ship A1 {first[1]['correlation_id']}"]


def test_every_action_is_an_intent_and_an_outcome_record_in_the_audit_log(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path))
    try:
        first = _act(core, {"kind": "refund", "order": "A1", "amount": 80, "log": str(log)},
                     {"kind": "ship", "order": "A1", "log": str(log)},  # idempotent: its outcome is deferred
                     {"kind": "wipe", "log": str(log)})  # refused: never an intent
    finally:
        core.stop()  # ships the audit records
    records = [r for r in read_log(tmp_path / "ck" / "clerk" / "audit", 0, None) if r["kind"] in ("intent", "outcome")]
    assert [(r["kind"], r["body"]["tag"]) for r in records if r["kind"] == "intent"] == [
        ("intent", "govtest.refund@1"), ("intent", "govtest.ship@1")]
    intents = {r["body"]["key"]: r["body"] for r in records if r["kind"] == "intent"}
    outcomes = {r["body"]["key"]: r["body"] for r in records if r["kind"] == "outcome"}
    assert set(intents) == set(outcomes) and len(records) == 4, records
    refund_key = next(k for k, b in intents.items() if b["tag"] == "govtest.refund@1")
    assert intents[refund_key]["args"]["amount"] == 80 and intents[refund_key]["idempotent"] is False
    assert outcomes[refund_key]["code"] == "ok" and outcomes[refund_key]["result"] == {"refunded": 80}
    assert [o["code"] for o in first] == ["ok", "ok", "refused"]
    assert verify_log(tmp_path / "ck" / "clerk" / "audit", []).ok


def test_idempotent_outcomes_are_committed_before_the_handler_returns_even_when_it_fails(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path))
    ship = {"kind": "ship", "order": "S1", "log": str(log)}
    raw = encode_envelope(make_envelope(ActThenFail(actions=[ship, {**ship, "order": "S2"}]), "clerk"))
    try:
        ok, error = decode_reply(core.deliver(raw))
        assert not ok and "failed after acting" in str(error)
        assert len(_calls(log)) == 2
    finally:
        core.stop()
    core = AgentCore(_spec(tmp_path))  # the next incarnation: only what was committed
    try:
        ledger = core.gateway.ledger(limit=0)
        assert [(e["args"]["order"], e["outcome"]["code"]) for e in ledger] == [("S1", "ok"), ("S2", "ok")]
        assert core.gateway.status()["in_doubt"] == 0
        ok, _ = decode_reply(core.deliver(raw))  # the same message again: recorded outcomes, no new calls
        assert not ok and len(_calls(log)) == 2
    finally:
        core.stop()


def test_the_ledger_keeps_entries_for_its_retention_then_trims_them_after_handlers(tmp_path, monkeypatch):
    monkeypatch.setattr("runtime._gateway.TRIM_EVERY", 0.0)
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, ledger_retention=0.5))
    try:
        ship = {"kind": "ship", "order": "S", "log": str(log)}
        assert [o["code"] for o in _act(core, ship, ship, ship)] == ["ok"] * 3
        first = {e["key"] for e in core.gateway.ledger(limit=0)}
        assert len(first) == 3
        # Later handlers trim what is past the retention (the first three); what is younger stays.
        wait_for(lambda: _act(core, ship) and not first & {e["key"] for e in core.gateway.ledger(limit=0)},
                 timeout=30)
        kept = core.gateway.ledger(limit=0)
        assert kept and all(e["outcome"]["code"] == "ok" for e in kept)
        assert max(e["at"] for e in kept) > time.time() - 0.5, "the newest are kept"
    finally:
        core.stop()


def test_business_errors_do_not_open_the_breaker_and_failures_do(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, breaker=BreakerPolicy(consecutive_failures=3, failure_rate=None,
                                                           open_for=600)))
    try:
        business = {"kind": "refund", "order": "B", "amount": 1, "log": str(log), "fail": "business"}
        outcomes = _act(core, *[business] * 5)
        assert [o["code"] for o in outcomes] == ["failed"] * 5
        assert not outcomes[0]["retryable"] and "OutOfStock" in outcomes[0]["reason"]
        assert core.gateway.status()["open_breakers"] == []
        error = {"kind": "refund", "order": "E", "amount": 1, "log": str(log), "fail": "error"}
        outcomes = _act(core, *[error] * 4)
        assert [o["code"] for o in outcomes] == ["failed", "failed", "failed", "breaker_open"]
        assert outcomes[0]["retryable"]
        assert len(_calls(log)) == 5 + 3  # the fourth never reached the tool
        assert set(core.gateway.status()["open_breakers"]) == {"agent", "govtest.refund@1"}
    finally:
        core.stop()
    core = AgentCore(_spec(tmp_path, breaker=BreakerPolicy(consecutive_failures=3, failure_rate=None,
                                                           open_for=600)))
    try:  # the breakers' state is durable
        assert set(core.gateway.status()["open_breakers"]) == {"agent", "govtest.refund@1"}
        [outcome] = _act(core, {"kind": "ship", "order": "S", "log": str(log)})
        assert outcome["code"] == "breaker_open"
    finally:
        core.stop()


def test_an_open_breaker_probes_half_open_then_closes_or_reopens(tmp_path):
    log = tmp_path / "calls"
    quick = BreakerPolicy(consecutive_failures=2, failure_rate=None, open_for=0.2, open_for_max=0.2)
    core = AgentCore(_spec(tmp_path, breaker=quick))
    error = {"kind": "refund", "order": "E", "amount": 1, "log": str(log), "fail": "error"}
    good = {"kind": "refund", "order": "G", "amount": 1, "log": str(log)}
    try:
        assert [o["code"] for o in _act(core, error, error, good)] == ["failed", "failed", "breaker_open"]
        calls = len(_calls(log))
        # Refused without a call while open; after open_for one probe goes through and closes it.
        outcomes: list[str] = []
        wait_for(lambda: outcomes.append(_act(core, good)[0]["code"]) or outcomes[-1] != "breaker_open")
        assert outcomes[-1] == "ok" and set(outcomes[:-1]) <= {"breaker_open"}
        assert len(_calls(log)) == calls + 1, "only the probe reached the tool"
        assert core.gateway.status()["open_breakers"] == []
        # Open again; this time the probe fails, and the breaker reopens.
        assert [o["code"] for o in _act(core, error, error)] == ["failed", "failed"]
        outcomes.clear()
        wait_for(lambda: outcomes.append(_act(core, error)[0]["code"]) or outcomes[-1] != "breaker_open")
        assert outcomes[-1] == "failed"
        assert _act(core, good)[0]["code"] == "breaker_open"
        assert core.gateway.status()["breaker_trips"] >= 2
    finally:
        core.stop()


def test_the_semantic_breaker_trips_on_drifting_outputs_and_pulls_the_kill_switch(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, WatchedClerk, drift=DriftPolicy(window=4, min_samples=2, threshold=0.5),
                           on_trip="halt"))
    try:
        def write(text):
            return {"kind": "write", "text": text, "log": str(log)}
        steady = _act(core, *[write(f"your order {i} ships monday") for i in range(6)])
        assert {o["code"] for o in steady} == {"ok"}
        assert core.gateway.status()["breakers"]["drift"] == "closed"
        drifting = _act(core, write("we refund everyone"), write("refund everyone now"), write("hello"))
        assert [o["code"] for o in drifting] == ["ok", "ok", "breaker_open"]
        assert "semantic breaker" in drifting[2]["reason"]
        assert len(_calls(log)) == 8
        with pytest.raises(ConfigError, match="no breaker 'nope'"):
            core.reset_breaker("nope", "alice")
        assert core.reset_breaker("drift", "alice")["breakers"]["drift"] == "closed"
        # on_trip="halt": the kill switch, once the handler that tripped it is done.
        wait_for(lambda: core.lifecycle is AgentState.HALTED)
        wait_for(lambda: not any(t.name.startswith("garrison-trip-") for t in threading.enumerate()))
        [halt] = [e for e in core.operator_log() if e["action"] == "halt"]
        assert halt["who"] == "breaker" and "drift breaker tripped" in halt["why"]
    finally:
        core.stop()


def test_a_scripted_behaviour_change_is_flagged_then_paused_by_the_behaviour_policy(tmp_path):
    log = tmp_path / "calls"
    policy = BehaviourPolicy(baseline=20, window=10, flag_at=0.3, pause_at=0.6)
    core = AgentCore(_spec(tmp_path, behaviour=policy))
    try:
        def ship(i):
            return {"kind": "ship", "order": f"S{i}", "log": str(log)}

        def refund(i):
            return {"kind": "refund", "order": f"R{i}", "amount": 50, "log": str(log)}  # costs 0.5, as a shipment

        assert {o["code"] for o in _act(core, *[ship(i) for i in range(20)])} == {"ok"}  # the baseline
        _act(core, *[refund(i) for i in range(4)], *[ship(i) for i in range(20, 26)])  # the mix moves by 0.4
        behaviour = core.gateway.status()["behaviour"]
        assert behaviour["level"] == "flagged" and behaviour["last"]["action_mix"] == 0.4
        assert core.lifecycle is AgentState.RUNNING, "flagged for review, not paused"
        _act(core, *[refund(i) for i in range(4, 10)])  # refunds only now
        assert core.gateway.status()["behaviour"]["level"] == "paused"
        wait_for(lambda: core.lifecycle is AgentState.HALTED)  # the kill switch, once that handler is done
        wait_for(lambda: not any(t.name.startswith("garrison-trip-") for t in threading.enumerate()))
        [halt] = [e for e in core.operator_log() if e["action"] == "halt"]
        assert halt["who"] == "behaviour-policy" and "action mix" in halt["why"]
        core.unhalt("alice", "reviewed: refunds were the plan")
        core.reset_breaker("behaviour", "alice")
        assert core.gateway.status()["behaviour"]["level"] == "normal"
    finally:
        core.stop()
    flags = [r["body"] for r in read_log(tmp_path / "ck" / "clerk" / "audit", 0, None) if r["kind"] == "behaviour"]
    assert [(f["level"], f["action_mix"]) for f in flags] == [("flagged", 0.4), ("paused", 0.6)]
    assert all(f["version"] == core.version for f in flags)


def test_every_action_that_never_ran_is_a_refusal_record_committed_with_its_handler(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, grants=("payments.refund", "db.admin"), budget=BudgetPolicy(limit=1.0)))
    try:
        codes = [o["code"] for o in _act(
            core, {"kind": "ship", "order": "R1", "log": str(log)},                   # not granted
            {"kind": "wipe", "log": str(log)},                                          # prohibited
            {"kind": "refund", "order": "R2", "amount": 60, "log": str(log)},           # runs: 0.6 of 1.0
            {"kind": "refund", "order": "R3", "amount": 50, "log": str(log)})]          # 0.5 > 0.4 left
        assert codes == ["refused", "refused", "ok", "budget_exceeded"]
        raw = encode_envelope(make_envelope(ActThenFail(actions=[{"kind": "wipe", "log": str(log)}]), "clerk"))
        assert not decode_reply(core.deliver(raw))[0]  # the handler fails: its refusal record goes with it
    finally:
        core.stop()
    refusals = [r["body"] for r in read_log(tmp_path / "ck" / "clerk" / "audit", 0, None) if r["kind"] == "refusal"]
    assert [(r["tag"], r["code"]) for r in refusals] == [
        ("govtest.ship@1", "refused"), ("govtest.wipe@1", "refused"), ("govtest.refund@1", "budget_exceeded")]
    assert "shipping" in refusals[0]["reason"] and "prohibited" in refusals[1]["reason"]
    assert all(r["message"] and r["key"].startswith(r["message"]) for r in refusals), refusals
    assert _calls(log) == ["refund R2 60"]


def test_an_estimate_over_what_is_left_is_refused_before_the_call(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, budget=BudgetPolicy(limit=1.0)))
    try:
        outcomes = _act(core, {"kind": "refund", "order": "C1", "amount": 60, "log": str(log)},   # 0.6
                        {"kind": "refund", "order": "C2", "amount": 50, "log": str(log)})         # 0.5 > 0.4 left
        assert [o["code"] for o in outcomes] == ["ok", "budget_exceeded"]
        assert _calls(log) == ["refund C1 60"]
        budget = core.gateway.status()["budget"]
        assert budget["spent"] == pytest.approx(0.6) and budget["reserved"] == 0
    finally:
        core.stop()


def test_an_intent_that_cannot_commit_fails_the_handler_and_gives_back_its_reservation(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, budget=BudgetPolicy(limit=1.0)))
    real = Ledger.intent
    failures = []

    def full_disk(self, key, **kw):
        if not failures:
            failures.append(key)
            raise StateError("commit failed: MDB_MAP_FULL")
        return real(self, key, **kw)

    monkeypatch.setattr(Ledger, "intent", full_disk)
    try:
        refund = {"kind": "refund", "order": "C1", "amount": 60, "log": str(log)}
        ok, error = decode_reply(core.deliver(encode_envelope(make_envelope(Act(actions=[refund]), "clerk"))))
        assert not ok and "MDB_MAP_FULL" in str(error) and failures
        assert _calls(log) == [], "no intent, no call"
        budget = core.gateway.status()["budget"]
        assert budget["reserved"] == 0 and budget["spent"] == 0, "the reservation was given back"
        assert [o["code"] for o in _act(core, refund)] == ["ok"]
        assert core.gateway.status()["budget"]["spent"] == pytest.approx(0.6)
    finally:
        core.stop()


def test_medium_actions_past_the_unreviewed_limit_need_approval(tmp_path):
    log = tmp_path / "calls"
    core = AgentCore(_spec(tmp_path, risk_policy=RiskPolicy(version="7", medium_unreviewed_limit=2)))
    try:
        note = {"kind": "audit", "note": "n", "log": str(log)}
        outcomes = _act(core, note, note, note)
        assert [o["code"] for o in outcomes[:2]] == ["ok", "ok"]
        assert outcomes[2]["code"] != "ok" and outcomes[2]["escalation"] == "human"
        assert len(_calls(log)) == 2
        assert core.gateway.status()["unreviewed_medium"] == 2
        assert core.review_actions("alice")["unreviewed_medium"] == 0
        assert _act(core, note)[0]["code"] == "ok"
    finally:
        core.stop()


# -- SIGKILL during the call -------------------------------------------------------------


def _run_until_the_tool_is_called(tmp_path, cls, raw: bytes, log: Path, gate: Path) -> None:
    """A real process hosts the agent and handles ``raw``; SIGKILLed while its tool waits at the gate."""
    (tmp_path / "msg").write_bytes(raw)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from runtime import AgentConfig
        from runtime._core import AgentCore
        from runtime._spec import HostSpec
        from tests.gov_agents import {cls.__name__} as cls
        spec = HostSpec("clerk", cls, {str(tmp_path / 'data')!r}, {str(tmp_path / 'ck')!r},
                        config=AgentConfig(grants=("payments.refund", "shipping.*")))
        AgentCore(spec).deliver(open({str(tmp_path / 'msg')!r}, "rb").read())
    """)
    with open(gate, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the tool blocks on it
        proc = subprocess.Popen([sys.executable, "-c", script])
        try:
            wait_for(lambda: len(_calls(log)) == 1 or proc.poll() is not None, timeout=60)
            assert proc.poll() is None, "the host died before its tool was called"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("kind, cls, want, calls", [
    ("ship", Clerk, "ok", 2),                      # idempotent: called again, same key
    ("refund", Clerk, "unknown", 1),               # not idempotent, no hook: escalated, not repeated
    ("refund", ReconcilingClerk, "ok", 1),         # the hook finds it happened: not repeated
], ids=["idempotent-recalled", "unknown-escalated", "reconciled"])
def test_a_call_interrupted_by_sigkill_is_never_repeated_blindly(tmp_path, kind, cls, want, calls):
    log, gate = tmp_path / "calls", tmp_path / "gate"
    _spec(tmp_path)
    action = {"kind": kind, "order": "K1", "log": str(log), "block": str(gate)}
    if kind == "refund":
        action["amount"] = 10
    raw = encode_envelope(make_envelope(Act(actions=[action]), "clerk"))
    _run_until_the_tool_is_called(tmp_path, cls, raw, log, gate)
    core = AgentCore(_spec(tmp_path, cls, grants=("payments.refund", "shipping.*")))
    try:
        assert core.gateway.status()["in_doubt"] == 1
        [outcome] = _act(core, raw=raw)  # the message was never acknowledged: its sender redelivers it
        assert outcome["code"] == want, outcome
        if want == "unknown":
            assert outcome["escalation"] == "human" and "not repeated" in outcome["reason"]
        assert core.gateway.status()["in_doubt"] == 0
        lines = _calls(log)
        assert len(lines) == calls, lines
        if kind == "ship":
            assert lines[0] == lines[1]  # the same idempotency key both times
        assert _act(core, raw=raw) == [outcome]  # and from now on, the recorded outcome
    finally:
        core.stop()
    assert len(_calls(log)) == calls
