"""The pipeline desk in-process (no Ray): a person's retry is a hand-over to the stage's queue, not
bound to the deadline of the ask that resolved it; the counts ``Pipeline.status`` reads."""

from __future__ import annotations

import time

from protocols import decode_envelope, encode_envelope, make_envelope
from runtime._core import AgentCore
from runtime._pipeline_desk import EscalationCounts, Resolve
from runtime._reply import decode_reply
from runtime._spec import HostSpec
from runtime._stage import Escalate, ticket
from runtime._store import DELETE
from runtime.pipelines import PipelineDesk

STAGES = [{"name": "review", "queue": "pl-review", "attempts": 2, "escalate": True}]


def _ask(core: AgentCore, msg, timeout: float | None = None):
    deadline = None if timeout is None else time.time() + timeout
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(msg, "pl-desk", sender="driver:t",
                                                                        deadline=deadline))))
    assert ok, value
    return value


def _desk(tmp_path, stages=STAGES) -> AgentCore:
    for d in ("data", "ck"):
        (tmp_path / d).mkdir()
    core = AgentCore(HostSpec("pl-desk", PipelineDesk, str(tmp_path / "data"), str(tmp_path / "ck"),
                              init={"pipeline": "pl", "stages": stages}))
    core.ensure_started()
    return core


def test_a_retry_goes_to_the_stage_queue_without_the_resolving_asks_deadline(tmp_path):
    core = _desk(tmp_path)
    try:
        _ask(core, Escalate(item="T1", stage="review", error="lawsuit", attempts=2,
                            ticket=ticket("T1", {"text": "my lawsuit"}, time.time())))
        resolved = _ask(core, Resolve(item="T1", action="retry", who="ana"), timeout=2)
        assert resolved["state"] == "retried" and resolved["resolved"]["as"] == "T1~h1"
        [(_, raw)] = core.store.scan("outbox", b"pl-review\x00")
        sent = decode_envelope(raw)
        assert sent.type.startswith("garrison.queue.enqueue") and sent.body["key"] == "T1~h1"
        assert sent.deadline is None, "a hand-over that outlives the person's ask"
    finally:
        core.stop()


def test_the_counts_follow_escalations_and_resolutions_and_a_desk_without_them_counts_its_records(tmp_path):
    stages = [*STAGES, {"name": "draft", "queue": "pl-draft", "attempts": 2, "escalate": True}]
    core = _desk(tmp_path, stages)
    try:
        for item, stage in (("T1", "review"), ("T2", "draft"), ("T3", "draft"), ("T2", "draft")):  # T2 twice: once
            _ask(core, Escalate(item=item, stage=stage, error="no", attempts=2, ticket=ticket(item, {}, time.time())))
        _ask(core, Resolve(item="T2", action="drop", who="ana"))
        _ask(core, Resolve(item="T3", action="retry", who="ana"))
        expected = {"total": 3, "open": 1, "dropped": 1, "by_stage": {"review": 1, "draft": 2}}
        assert _ask(core, EscalationCounts()) == expected
        core.store.commit([("data", DELETE, b"counts", None)])  # as a desk written before the counts
        assert _ask(core, EscalationCounts()) == expected, "counted from the records, once"
        assert core.store.get("data", b"counts") is not None
        core.store.commit([("data", DELETE, b"counts", None)])
        _ask(core, Escalate(item="T4", stage="review", error="no", attempts=2, ticket=ticket("T4", {}, time.time())))
        assert _ask(core, EscalationCounts()) == {**expected, "total": 4, "open": 2, "by_stage": {"review": 2, "draft": 2}}
    finally:
        core.stop()
