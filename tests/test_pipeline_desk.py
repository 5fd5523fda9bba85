"""The pipeline desk in-process (no Ray): a person's retry is a hand-over to the stage's queue, not
bound to the deadline of the ask that resolved it."""

from __future__ import annotations

import time

from protocols import decode_envelope, encode_envelope, make_envelope
from runtime._core import AgentCore
from runtime._pipeline_desk import Resolve
from runtime._reply import decode_reply
from runtime._spec import HostSpec
from runtime._stage import Escalate, ticket
from runtime.pipelines import PipelineDesk

STAGES = [{"name": "review", "queue": "pl-review", "attempts": 2, "escalate": True}]


def _ask(core: AgentCore, msg, timeout: float | None = None):
    deadline = None if timeout is None else time.time() + timeout
    ok, value = decode_reply(core.deliver(encode_envelope(make_envelope(msg, "pl-desk", sender="driver:t",
                                                                        deadline=deadline))))
    assert ok, value
    return value


def test_a_retry_goes_to_the_stage_queue_without_the_resolving_asks_deadline(tmp_path):
    for d in ("data", "ck"):
        (tmp_path / d).mkdir()
    core = AgentCore(HostSpec("pl-desk", PipelineDesk, str(tmp_path / "data"), str(tmp_path / "ck"),
                              init={"pipeline": "pl", "stages": STAGES}))
    core.ensure_started()
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
