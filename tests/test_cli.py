"""The ``garrison`` command against a live agent on the shared Ray (a real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import AgentUnavailable

from .agents import Add, Counter, GetCount
from .waiting import wait_for

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def garrison(*args: str, address: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args, "--json", "--address", address],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ},
    )


def test_status_dead_letters_and_replay_from_the_cli(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    ref.tell(Add(n=7), timeout=-1)  # expires before it is handled: a dead letter
    wait_for(ref.admin.dead_letters, timeout=30)
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
    status = ref.admin.status()
    assert status["state"] == "halted" and "alice@ops" in status["failure"]
    from runtime import AgentNotRunning

    with pytest.raises(AgentNotRunning, match="halted by alice@ops"):
        ref.ask(GetCount())


# -- the console script -------------------------------------------------------------------

# The console script pip installed: next to this interpreter (a venv), else on PATH.
_BESIDE = Path(sys.executable).parent / "garrison"
GARRISON = str(_BESIDE) if _BESIDE.exists() else (shutil.which("garrison") or "garrison")


def console(*args: str, address: str | None = None, as_json: bool = True) -> subprocess.CompletedProcess:
    """Run the installed ``garrison`` console script (the one users run), on this checkout's code.

    PYTHONPATH puts this checkout ahead of the one the script was installed
    from (an editable install's finder comes after it).  ``as_json``: as a
    script runs it (``GARRISON_JSON=1``, what ``--json`` does); else as a person does (tables).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("GARRISON_JSON", None)
    if as_json:
        env["GARRISON_JSON"] = "1"
    return subprocess.run(
        [GARRISON, *args, *(["--address", address] if address else [])],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )


def test_garrison_metrics_prints_the_grafana_dashboard_and_the_alert_rules_it_ships():
    import yaml

    grafana, alerts = console("metrics", "grafana", as_json=False), console("metrics", "alerts", as_json=False)
    assert grafana.returncode == 0 and alerts.returncode == 0, grafana.stderr + alerts.stderr
    assert json.loads(grafana.stdout)["uid"] == "garrison-agents"
    shipped = (ROOT / "runtime" / "assets" / "garrison-alerts.yml").read_text()
    assert alerts.stdout == shipped, "the rules file verbatim, for rule_files"
    as_json = console("metrics", "alerts", "--json", as_json=False)
    assert json.loads(as_json.stdout) == yaml.safe_load(shipped)


def _events(stderr: str) -> list[dict]:
    """The notifications the command printed (one JSON object per line on stderr)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_garrison_help_lists_every_command():
    out = console("--help")
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"actions", "agents", "approvals", "audit", "checkpoint", "deadletters", "decisions", "demo", "feedback",
                      "deploy", "hosts", "kill", "ledger", "metrics", "operators", "rollback", "versions",
                      "quarantine", "release", "replay", "reset-breaker", "restores", "review", "status", "unhalt",
                      "top", "tree", "inspect", "logs", "queue", "pool", "pipeline"}


def test_a_switch_without_who_why_or_target_is_a_usage_error_that_touches_no_cluster():
    for args in (["quarantine", "--agent", "x", "--who", "me"], ["kill", "--who", "me", "--why", "w"],
                 ["release", "--who", "me", "--why", "w"], ["unhalt", "--agent", "x", "--all", "--who", "me",
                                                              "--why", "w"]):
        out = console(*args, address="127.0.0.1:1")  # nothing listens there: a connection would fail otherwise
        assert out.returncode == 2 and "Usage: garrison" in out.stderr, (args, out.stderr[-500:])


def test_quarantine_survives_a_restart_and_release_is_recorded_from_the_console_script(system, agent_id,
                                                                                       ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    ref.ask(Add(n=2))
    out = console("quarantine", "--agent", agent_id, "--who", "dave@ops", "--why", "odd replies", address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    before = json.loads(out.stdout)
    assert before["state"] == "quarantined"
    assert [(e["kind"], e["child"], e["who"], e["why"]) for e in _events(out.stderr)] == [
        ("quarantined", agent_id, "dave@ops", "odd replies")]

    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        try:
            status = ref.admin.status()
        except AgentUnavailable:
            return None
        return status if status["incarnation"] == before["incarnation"] + 1 else None

    assert wait_for(restarted)["state"] == "quarantined"
    out = console("release", "--agent", agent_id, "--who", "erin@ops", "--why", "replies checked", address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads(out.stdout)["state"] == "running"
    assert [(e["kind"], e["who"], e["why"]) for e in _events(out.stderr)] == [
        ("released", "erin@ops", "replies checked")]
    assert ref.ask(GetCount()) == 2

    out = console("actions", agent_id, address=address)
    assert [(r["action"], r["who"], r["why"]) for r in json.loads(out.stdout)] == [
        ("quarantine", "dave@ops", "odd replies"), ("release", "erin@ops", "replies checked")]
    assert all(r["time"] > 0 for r in json.loads(out.stdout))


def test_kill_then_unhalt_from_the_console_script(system, agent_id, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    ref = system.spawn(Counter, agent_id)
    ref.ask(Add(n=5))
    out = console("kill", "--agent", agent_id, "--who", "alice@ops", "--why", "runaway spend", address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    assert ref.admin.status()["state"] == "halted"
    out = console("unhalt", "--agent", agent_id, "--who", "alice@ops", "--why", "spend capped", address=address)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads(out.stdout)[agent_id]["state"] == "running"
    assert [(e["kind"], e["who"], e["why"]) for e in _events(out.stderr)] == [
        ("unhalted", "alice@ops", "spend capped")]
    assert ref.ask(GetCount()) == 5
    assert [(r["action"], r["who"], r["why"]) for r in ref.admin.operator_log()] == [
        ("halt", "alice@ops", "runaway spend"), ("unhalt", "alice@ops", "spend capped")]
    out = console("quarantine", "--agent", "no-such-agent", "--who", "d", "--why", "w", address=address)
    assert out.returncode == 2 and "AgentNotFound" in out.stderr
