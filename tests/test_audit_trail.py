"""The agent's audit trail, in-process (no Ray): requests, decisions and operator actions reach its log.

Real LMDB and real log files under ``tmp_path``; each core is built as its
host builds it.  The log is checked with the same offline verifier that
``garrison audit verify`` runs.
"""

from __future__ import annotations

import hashlib

import pytest

from audit import SigningKey, read_log, verify_log, write_signing_key
from protocols import canonical_bytes, encode_envelope, error_from_wire, make_envelope
from runtime import AgentConfig, AgentStartError, CheckpointError, FeedbackError, Fenced
from runtime._audit import HELD_GRACE, AuditTrail
from runtime._core import AgentCore
from runtime._feedback import FeedbackDesk
from runtime._reply import decode_reply
from runtime._spec import HostSpec
from runtime._trace import child
from runtime._transitions import decode_transitions

from .agents import Add, Classify, Counter, Triage


def _core(tmp_path, agent=Triage, config=None, agent_id="triage-1") -> AgentCore:
    (tmp_path / "node").mkdir(exist_ok=True)
    (tmp_path / "ck").mkdir(exist_ok=True)
    core = AgentCore(HostSpec(agent_id, agent, str(tmp_path / "node"), str(tmp_path / "ck"),
                              config=config or AgentConfig()))
    core.ensure_started()
    return core


def _ask(core, msg, **kw):
    env = make_envelope(msg, core.agent_id, **kw)
    ok, value = decode_reply(core.deliver(encode_envelope(env)))
    return (value if ok else error_from_wire(value)), env


def _desk(core) -> FeedbackDesk:
    return FeedbackDesk(core.agent_id, core.audit, core.store)  # as the host makes it for each call


def _ship(core) -> int:
    """What the background thread does each ship interval: the journal, then the audit records."""
    return core.audit.ship(core.shipper.ship())


@pytest.fixture
def key(tmp_path):
    key = SigningKey.generate("garrison")
    write_signing_key(tmp_path / "audit.key", key)
    return key


def test_requests_and_decisions_are_recorded_in_order_and_the_log_verifies(tmp_path, key):
    core = _core(tmp_path, config=AgentConfig(audit_key=str(tmp_path / "audit.key")))
    trace = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    assert _ask(core, Classify(ticket="t1", text="refund please"), traceparent=trace)[0] == "refund"
    assert _ask(core, Classify(ticket="keep-2", text="how do I"))[0] == "question"
    _ship(core)
    core.stop()  # signs a checkpoint of the whole log
    directory = tmp_path / "ck" / "triage-1" / "audit"
    report = verify_log(directory, [key.verifier])
    assert report.ok and report.size == 6 and report.checkpoints >= 1, report.to_json()
    # First, the agent version it runs (``_version``); last, the transition segment its stop stored.
    version, *records, segment = read_log(directory)
    assert version["kind"] == "manifest" and version["body"]["hash"] == core.version
    [stored] = core.ckstore.list_transitions("triage-1")
    payload = core.ckstore.read_transitions("triage-1", stored)
    assert segment["kind"] == "segment" and segment["body"]["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert (segment["body"]["first"], segment["body"]["last"], segment["body"]["epoch"]) == (
        stored.first, stored.last, stored.epoch)
    assert segment["body"]["records"] == len(decode_transitions(payload)) > 0
    assert [r["kind"] for r in records] == ["request", "decision", "request", "decision"]
    assert all(r["body"]["version"] == core.version for r in records)
    first, decision = records[0]["body"], records[1]["body"]
    assert first["type"] == "test.classify@1" and first["trace"] == trace
    assert decision["message"] == first["id"] and decision["trace"] == trace
    assert (decision["choice"], decision["options"]) == ("refund", ["refund", "question", "complaint"])
    want = "sha256:" + hashlib.sha256(canonical_bytes({"ticket": "t1", "text": "refund please"})).hexdigest()
    assert decision["context_digest"] == want and "context" not in decision, "only the digest unless kept"
    assert records[3]["body"]["context"] == {"ticket": "keep-2", "text": "how do I"}
    assert all(r["body"]["agent"] == "triage-1" for r in records)
    seqs = [r["body"]["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_a_failed_handler_records_neither_its_request_nor_its_decision(tmp_path):
    core = _core(tmp_path)
    failed, _ = _ask(core, Classify(ticket="t1!", text="refund"))
    assert type(failed).__name__ == "HandlerError"
    assert _ask(core, Classify(ticket="t2", text="angry"))[0] == "complaint"
    _ship(core)
    kinds = [(r["kind"], r["body"].get("choice")) for r in read_log(core.audit.directory)]
    assert kinds == [("manifest", None), ("request", None), ("decision", "complaint")]


def test_decisions_are_queryable_by_trace_and_time_from_the_log_and_from_what_is_not_shipped(tmp_path):
    core = _core(tmp_path)
    traces = ["00-" + f"{i:032x}" + "-" + "cd" * 8 + "-01" for i in range(3)]
    for i, tp in enumerate(traces):
        _ask(core, Classify(ticket=f"t{i}", text="refund" if i else "hello"), traceparent=tp)
    _ship(core)  # t0..t2 in the log
    _ask(core, Classify(ticket="t3", text="angry"), traceparent=traces[1])  # not shipped yet
    all_ = core.audit.decisions()
    assert [d["choice"] for d in all_] == ["question", "refund", "refund", "complaint"]
    assert [d["index"] is None for d in all_] == [False, False, False, True]
    assert [d["choice"] for d in core.audit.decisions(trace=traces[1])] == ["refund", "complaint"]
    # By trace id, or by another hop's traceparent of the same trace (a new parent id each hop).
    assert [d["choice"] for d in core.audit.decisions(trace=f"{1:032x}")] == ["refund", "complaint"]
    assert [d["choice"] for d in core.audit.decisions(trace=child(traces[1]))] == ["refund", "complaint"]
    cut = all_[2]["time"]
    assert [d["choice"] for d in core.audit.decisions(since=cut)] == ["refund", "complaint"]
    assert [d["choice"] for d in core.audit.decisions(until=cut)] == ["question", "refund"]
    assert [d["choice"] for d in core.audit.decisions(limit=1)] == ["complaint"]


def test_operator_actions_are_in_the_log_with_who_and_why(tmp_path):
    core = _core(tmp_path, agent=Counter, agent_id="ops-1")
    core.quarantine("odd replies", "dave")
    core.release("erin", "checked")
    core.halt("frank", "incident 7", grace=0.1)
    core.unhalt("grace", "resolved", auth="ed25519:0a0b0c0d")
    _ship(core)
    ops = [(r["body"]["action"], r["body"]["who"], r["body"]["why"], r["body"]["auth"])
           for r in read_log(core.audit.directory) if r["kind"] == "operator"]
    assert ops == [("quarantine", "dave", "odd replies", "runtime"), ("release", "erin", "checked", "runtime"),
                   ("halt", "frank", "incident 7", "runtime"), ("unhalt", "grace", "resolved", "ed25519:0a0b0c0d")]


def test_a_crash_between_appending_and_trimming_puts_nothing_in_twice(tmp_path):
    core = _core(tmp_path, agent=Counter, agent_id="c-1")
    for n in range(5):
        _ask(core, Add(n=n))
    _ship(core)
    assert core.store.count("audit") == 6, "shipped, not trimmed yet: trims ride along with later commits"
    core.close_files()  # the process dies here

    core = _core(tmp_path, agent=Counter, agent_id="c-1")
    for n in range(3):
        _ask(core, Add(n=n))
    _ship(core)
    _ask(core, Add(n=1))  # a commit: its trim deletes what is in the log
    assert core.store.count("audit") == 1, "only the newest, not shipped yet"
    version, *records = read_log(core.audit.directory)
    assert version["kind"] == "manifest", "recorded once: the second incarnation runs the same version"
    assert [r["kind"] for r in records] == ["request"] * 8
    assert len({r["body"]["id"] for r in records}) == 8
    assert verify_log(core.audit.directory, []).ok


def test_audit_off_records_nothing_and_decide_still_answers(tmp_path):
    core = _core(tmp_path, config=AgentConfig(audit=False))
    assert _ask(core, Classify(ticket="t1", text="refund"))[0] == "refund"
    assert core.audit is None and core.store.count("audit") == 0
    assert not (tmp_path / "ck" / "triage-1" / "audit").exists()


def test_a_decision_that_is_not_plain_data_fails_the_handler(tmp_path):
    class Odd(Triage):
        def classify(self, msg: Classify) -> str:
            self.decide({1, 2}, rationale="a set")
            return "x"

    core = _core(tmp_path, agent=Odd)
    failed, _ = _ask(core, Classify(ticket="t", text="x"))
    assert type(failed).__name__ == "HandlerError" and "plain data" in str(failed), failed


def test_decide_outside_a_handler_is_refused():
    with pytest.raises(RuntimeError, match="only available while a handler runs"):
        Triage().decide("x")


def test_a_missing_audit_key_is_an_agent_start_error(tmp_path):
    with pytest.raises(AgentStartError, match="audit_key"):
        _core(tmp_path, config=AgentConfig(audit_key=str(tmp_path / "nope.key")))


QUIET = {"ship_interval": 3600, "checkpoint_interval": 3600}  # no background shipping: the test drives it


def test_a_replaced_incarnation_lets_go_of_the_log_and_its_successor_ships_after_it(tmp_path):
    old = _core(tmp_path, config=AgentConfig(**QUIET))
    _ask(old, Classify(ticket="t1", text="refund please"))
    _ship(old)  # the old incarnation holds the log's lock from now on
    (tmp_path / "node-b").mkdir()
    new = AgentCore(HostSpec("triage-1", Triage, str(tmp_path / "node-b"), str(tmp_path / "ck"),
                             config=AgentConfig(**QUIET)))  # another node: restores from the store
    new.ensure_started()
    assert _ask(new, Classify(ticket="t2", text="angry"))[0] == "complaint"
    assert _ship(new) == 0 and new.audit.status()["records"] is None  # waits, quietly, for the lock

    late, _ = _ask(old, Classify(ticket="t3", text="refund"))
    assert isinstance(late, Fenced)  # the old one finds out, and lets go
    shipped = _ship(new)
    _, *records = read_log(tmp_path / "ck" / "triage-1" / "audit", 0, None)  # the version, then ...
    assert [r["kind"] for r in records] == ["request", "decision"] * 2  # the old one's, then the new one's
    assert [r["body"]["rationale"] for r in records[1::2]] == ["keywords in ticket t1", "keywords in ticket t2"]
    seqs = [r["body"]["seq"] for r in records]
    assert seqs == sorted(set(seqs)) and shipped == seqs[-1], (seqs, shipped)
    old.stop()
    new.stop()


def test_a_log_held_past_the_grace_is_reported_as_failing(tmp_path):
    holder = _core(tmp_path, config=AgentConfig(**QUIET))
    _ask(holder, Classify(ticket="t1", text="refund please"))
    shipped = _ship(holder)
    now = [0.0]
    other = AuditTrail(holder.store, tmp_path / "ck" / "triage-1" / "audit", agent_id="triage-1", key=None,
                       fence=lambda where: None, clock=lambda: now[0])
    assert other.ship(holder.store.seq) == 0  # within the grace: nothing shipped, nothing raised
    now[0] = HELD_GRACE
    with pytest.raises(CheckpointError, match="held by another writer for 10s"):
        other.ship(holder.store.seq)
    holder.audit.close()  # lets go
    assert other.ship(holder.store.seq) == shipped and other.status()["records"] == 3  # manifest, request, decision
    other.close()
    holder.stop()


def test_feedback_on_a_decision_is_exported_with_its_provenance_before_and_after_shipping_and_a_restart(tmp_path):
    core = _core(tmp_path, config=AgentConfig(**QUIET))
    trace = "00-" + "ef" * 16 + "-" + "01" * 8 + "-01"
    _ask(core, Classify(ticket="keep-1", text="refund please"), traceparent=trace)
    _ask(core, Classify(ticket="t2", text="hello"))
    first, second = core.audit.decisions()
    _desk(core).annotate(first["id"], "wrong", "it was a question", "erin@ops")
    before = _desk(core).export()  # not shipped yet: read from the local table
    _ship(core)
    _desk(core).annotate(second["id"], "correct", "", "erin@ops")
    _desk(core).annotate(first["id"], "near_miss", "on second thought", "frank@ops")
    core.stop()

    again = _core(tmp_path, config=AgentConfig(**QUIET))  # restored: the annotations are in the log
    rows = _desk(again).export()
    assert [(r["decision"], r["label"], r["who"]) for r in rows] == [
        (first["id"], "wrong", "erin@ops"), (second["id"], "correct", "erin@ops"),
        (first["id"], "near_miss", "frank@ops")]
    assert all(r["index"] is not None for r in rows), "all in the log after the stop"
    assert before[0]["index"] is None and before[0]["note"] == "it was a question"
    provenance = rows[0]["provenance"]
    assert provenance["choice"] == "refund" and provenance["trace"] == trace
    assert provenance["rationale"] == "keywords in ticket keep-1" and provenance["options"] == list(Triage.OPTIONS)
    assert provenance["context"] == {"ticket": "keep-1", "text": "refund please"}  # kept for keep-* tickets
    assert provenance["context_digest"] == "sha256:" + hashlib.sha256(
        canonical_bytes({"ticket": "keep-1", "text": "refund please"})).hexdigest()
    assert "context" not in rows[1]["provenance"], "only the digest of a context not kept"
    assert _desk(again).export(limit=1) == rows[-1:]
    again.stop()


def test_feedback_is_refused_for_an_unknown_decision_or_label_and_without_an_audit_log(tmp_path):
    core = _core(tmp_path, config=AgentConfig(**QUIET))
    _ask(core, Classify(ticket="t1", text="refund please"))
    (decision,) = core.audit.decisions()
    with pytest.raises(FeedbackError, match="recorded no decision 'nope'"):
        _desk(core).annotate("nope", "wrong", "", "erin@ops")
    with pytest.raises(FeedbackError, match="unknown feedback label 'meh'"):
        _desk(core).annotate(decision["id"], "meh", "", "erin@ops")
    with pytest.raises(FeedbackError, match="who"):
        _desk(core).annotate(decision["id"], "wrong", "", "  ")
    assert _desk(core).export() == []  # nothing refused was recorded
    core.stop()
    off = _core(tmp_path, config=AgentConfig(audit=False), agent_id="triage-off")
    with pytest.raises(FeedbackError, match="keeps no audit log"):
        _desk(off).annotate(decision["id"], "wrong", "", "erin@ops")
    off.stop()
