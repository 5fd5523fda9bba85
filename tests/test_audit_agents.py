"""Agents on the shared Ray keep a signed audit log: it verifies, the CLI reads its decisions,
tampering is found, and a SIGKILL under load neither loses nor repeats a record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import SigningKey, read_log, verify_log, write_signing_key
from protocols import make_envelope
from runtime import AgentConfig, AgentUnavailable

from .agents import Add, Classify, Counter, Emit, GetCount, Producer, Report, Sink, Triage
from .waiting import wait_for

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def garrison(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisors.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "GARRISON_JSON": "1"})


def _log_dir(system, agent_id) -> Path:
    return system.checkpoint_dir / agent_id / "audit"


def test_an_agents_signed_log_verifies_the_cli_reads_its_decisions_and_finds_a_change(
        system, agent_id, tmp_path, ray_session):
    key = SigningKey.generate("ops-2026")
    write_signing_key(tmp_path / "audit.key", key)
    (tmp_path / "audit.vkey").write_text(str(key.verifier) + "\n")
    ref = system.spawn(Triage, agent_id, config=AgentConfig(audit_key=str(tmp_path / "audit.key"),
                                                            audit_key_name="ops-2026"))
    trace = "00-" + "12" * 16 + "-" + "34" * 8 + "-01"
    texts = ["refund now", "hello", "angry customer", "refund again"]
    for i, text in enumerate(texts):  # refs take no trace yet: an envelope made by hand carries one
        ref.ask_envelope(make_envelope(Classify(ticket=f"t{i}", text=text), agent_id, deadline=time.time() + 60,
                                       traceparent=trace if i % 2 == 0 else None))
    assert [d["choice"] for d in ref.admin.decisions(trace=trace)] == ["refund", "complaint"]
    address = ray_session.get_runtime_context().gcs_address
    out = garrison("decisions", agent_id, "--trace", trace, "--address", address)
    assert out.returncode == 0, out.stderr[-1500:]
    assert [d["rationale"] for d in json.loads(out.stdout)] == ["keywords in ticket t0", "keywords in ticket t2"]
    status = system.stop(agent_id)  # the last records and a signed checkpoint of the whole log
    # Its version, 4 x (request, decision), and the transition segment its stop stored.
    assert status["audit"]["signed"] and status["audit"]["records"] == 10, status["audit"]

    directory = _log_dir(system, agent_id)
    out = garrison("audit", "verify", str(directory), "--key", str(tmp_path / "audit.vkey"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["size"] == 10
    # Someone edits the choice of the decision on t1 ("question" -> "refund!!") in place: found, at its index, 4.
    records = directory / "records"
    raw = records.read_bytes()
    assert raw.count(b"question") >= 2  # the decision's choice and its options
    at = raw.index(b"question", raw.index(b"keywords in ticket t1") - 200)
    records.write_bytes(raw[:at] + b"refund!!" + raw[at + 8:])
    out = garrison("audit", "verify", str(directory), "--key", str(tmp_path / "audit.vkey"))
    assert out.returncode == 1 and "at index 4" in out.stderr, out.stdout + out.stderr


def test_a_sigkill_under_load_neither_loses_nor_repeats_a_request_record(system, agent_id):
    ref = system.spawn(Counter, agent_id, config=AgentConfig(ship_interval=0.2))
    first = ref.admin.status()
    told = 0
    while told < 400:
        ref.tell(Add(n=1))
        told += 1
        if told == 200:
            os.kill(first["pid"], signal.SIGKILL)
        time.sleep(0.002)  # pacing, so that some tells meet the agent down

    def restarted():
        try:
            return ref.admin.status()["incarnation"] > first["incarnation"]
        except AgentUnavailable:
            return False

    wait_for(restarted, timeout=120)
    ref.flush(timeout=120)
    assert ref.ask(GetCount(), timeout=60) == told, "each tell took effect once"
    directory = _log_dir(system, agent_id)

    def requests() -> list[str]:
        return [r["body"]["id"] for r in read_log(directory) if r.get("kind") == "request"]

    # Every Add and the GetCount, once each, once shipped (each ship interval, by the new incarnation too).
    ids = wait_for(lambda: (lambda got: got if len(got) >= told + 1 else None)(requests()), timeout=60)
    assert len(ids) == len(set(ids)) == told + 1
    assert verify_log(directory, []).ok


def test_batches_from_another_agents_outbox_are_one_requests_record_each_naming_every_message(system, agent_id):
    sink = system.spawn(Sink, f"{agent_id}-sink")
    producer = system.spawn(Producer, f"{agent_id}-producer")
    for start in range(0, 3000, 1000):
        producer.ask(Emit(to=sink.agent_id, start=start, count=1000))
    wait_for(lambda: sink.ask(Report())["count"] == 3000, timeout=60)
    directory = _log_dir(system, sink.agent_id)

    def batches() -> list[dict] | None:
        if not directory.exists():  # the first shipment (each ship interval) has not come yet
            return None
        got = [r["body"] for r in read_log(directory) if r.get("kind") == "requests"]
        return got if sum(len(b["messages"]) for b in got) >= 3000 else None

    got = wait_for(batches, timeout=60)
    assert len(got) < 3000, "batched: fewer records than messages"
    assert {b["sender"] for b in got} == {producer.agent_id}
    ids = [m[0] for b in got for m in b["messages"]]
    assert len(ids) == len(set(ids)) == 3000 and {m[1] for b in got for m in b["messages"]} == {"test.item@1"}
    assert verify_log(directory, []).ok


def test_people_annotate_decisions_from_the_console_script_and_export_them_as_jsonl(
        system, agent_id, tmp_path, ray_session):
    ref = system.spawn(Triage, agent_id)
    for i, text in enumerate(["refund now", "hello"]):
        ref.ask(Classify(ticket=f"keep-{i}", text=text))
    address = ray_session.get_runtime_context().gcs_address
    out = garrison("decisions", agent_id, "--address", address)
    assert out.returncode == 0, out.stderr[-1500:]
    refund, hello = json.loads(out.stdout)
    out = garrison("feedback", "add", agent_id, refund["id"], "--label", "right_for_wrong_reason",
                   "--note", "refund, but not because of the keyword", "--who", "erin@ops", "--address", address)
    assert out.returncode == 0, out.stderr[-1500:]
    out = garrison("feedback", "add", agent_id, "no-such-decision", "--label", "wrong", "--who", "erin@ops",
                   "--address", address)
    assert out.returncode == 2 and "FeedbackError" in out.stderr and "no-such-decision" in out.stderr, out.stderr
    out = garrison("feedback", "add", agent_id, hello["id"], "--label", "meh", "--who", "erin@ops",
                   "--address", address)
    assert out.returncode == 2 and "Invalid value for '--label'" in out.stderr, out.stderr  # click: a usage error
    out = garrison("feedback", "add", agent_id, hello["id"], "--label", "correct", "--who", "frank@ops",
                   "--address", address)
    assert out.returncode == 0, out.stderr[-1500:]

    export = tmp_path / "feedback.jsonl"
    out = garrison("feedback", "export", agent_id, "--out", str(export), "--address", address)
    assert out.returncode == 0, out.stderr[-1500:]
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert [(r["decision"], r["label"], r["who"]) for r in rows] == [
        (refund["id"], "right_for_wrong_reason", "erin@ops"), (hello["id"], "correct", "frank@ops")]
    assert rows[0]["note"] == "refund, but not because of the keyword" and rows[0]["agent"] == agent_id
    assert rows[0]["provenance"]["choice"] == "refund"
    assert rows[0]["provenance"]["context"] == {"ticket": "keep-0", "text": "refund now"}
    assert rows[1]["provenance"]["rationale"] == "keywords in ticket keep-1"
