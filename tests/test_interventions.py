"""Intervention hooks on messages and actions, in a real agent host (``AgentCore``, real LMDB)."""

from __future__ import annotations

import pytest

from protocols import encode_envelope, make_envelope
from runtime import AgentConfig, AgentStartError
from runtime._core import AgentCore
from runtime._reply import decode_reply
from runtime._spec import HostSpec

from .gov_agents import Act, Clerk

HOOKS = ("tests.gov_hooks:message_rules", "tests.gov_hooks:refund_rules")


def _core(tmp_path, hooks=HOOKS) -> AgentCore:
    for d in ("data", "ck"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    cfg = AgentConfig(grants=("payments.refund", "shipping.*"), interventions=hooks)
    return AgentCore(HostSpec("clerk", Clerk, str(tmp_path / "data"), str(tmp_path / "ck"), config=cfg))


def _deliver(core, *actions, sender="driver"):
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(Act(actions=list(actions)), "clerk",
                                                                        sender=sender))))
    return ok, value


def test_action_hooks_drop_modify_and_hold(tmp_path):
    log = tmp_path / "calls"
    core = _core(tmp_path)
    try:
        ok, outcomes = _deliver(core, {"kind": "refund", "order": "R1", "amount": 2000, "log": str(log)},
                                {"kind": "refund", "order": "R2", "amount": 80, "log": str(log)},
                                {"kind": "ship", "order": "H7", "log": str(log)})
        assert ok, outcomes
        dropped, capped, held = outcomes
        assert dropped["code"] == "refused" and "over 1000" in dropped["reason"]
        assert capped["code"] == "ok" and capped["result"] == {"refunded": 50}
        assert held["code"] == "refused" and "held by an intervention hook" in held["reason"]  # no queue here
        assert log.read_text().splitlines() == ["refund R2 50"]
    finally:
        core.stop()


def test_message_hooks_drop_hold_and_redact(tmp_path):
    log = tmp_path / "calls"
    core = _core(tmp_path)
    try:
        ok, err = _deliver(core, {"kind": "ship", "order": "S1", "log": str(log)}, sender="spammer")
        assert not ok and err[0] == "MessageDropped"
        ok, err = _deliver(core, {"kind": "ship", "order": "hold-me", "log": str(log)})
        assert not ok and err[0] == "MessageHeld"
        ok, outcomes = _deliver(core, {"kind": "ship", "order": "4111111111111111", "log": str(log)})
        assert ok and outcomes[0]["code"] == "ok"
        lines = log.read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ship REDACTED "), lines
        reasons = sorted(d["reason"] for d in core.dead_letters())
        assert reasons == ["dropped", "held"]
    finally:
        core.stop()


def test_a_hook_that_raises_fails_closed_and_one_that_does_not_import_fails_the_start(tmp_path):
    log = tmp_path / "calls"
    core = _core(tmp_path, hooks=("tests.gov_hooks:broken",))
    try:
        ok, err = _deliver(core, {"kind": "ship", "order": "S1", "log": str(log)})
        assert not ok and err[0] == "MessageDropped" and "this hook is broken" in err[1]
        assert not log.exists()
    finally:
        core.stop()
    with pytest.raises(AgentStartError, match="no_such_module"):
        _core(tmp_path / "other", hooks=("no_such_module:hook",))
