"""The ``garrison`` command against a live agent on the shared Ray (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .agents import Add, Counter, GetCount
from .waiting import wait_for

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def garrison(*args: str, address: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args, "--address", address],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ},
    )


def test_status_dead_letters_and_replay_from_the_cli(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    ref.tell(Add(n=7), timeout=-1)  # expires before it is handled: a dead letter
    wait_for(ref.dead_letters, timeout=30)
    out = garrison("status", agent_id, address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads(out.stdout)["state"] == "running"
    out = garrison("deadletters", agent_id, "--reason", "expired", address=address)
    letters = json.loads(out.stdout)
    assert len(letters) == 1 and letters[0]["reason"] == "expired"
    out = garrison("replay", agent_id, "--reason", "expired", address=address)
    assert json.loads(out.stdout) == [{"id": letters[0]["id"], "ok": True}]
    assert ref.ask(GetCount()) == 7, "the replayed message took effect"
    out = garrison("status", "no-such-agent", address=address)
    assert out.returncode == 2 and "AgentNotFound" in out.stderr


def test_kill_switch_from_the_cli(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    ref.ask(Add(n=1))
    out = subprocess.run(
        [sys.executable, "-m", "supervisors.cli", "kill", "--agent", agent_id, "--who", "alice@ops",
         "--why", "runaway spend", "--address", address],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ},
    )
    assert out.returncode == 0, out.stderr[-1500:]
    status = ref.status()
    assert status["state"] == "halted" and "alice@ops" in status["failure"]
    from runtime import AgentNotRunning

    with pytest.raises(AgentNotRunning, match="halted by alice@ops"):
        ref.ask(GetCount())
