"""The observer (``runtime._observer``): the tap's bound and its counting, then traces assembled across
agents on a real local Ray."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from protocols import make_envelope
from runtime import AgentConfig, GetTrace, Observer, ObserverStats
from runtime._observer import ObserverTap, trace_id
from tests.agents import Emit, Producer, Report, Sink
from tests.waiting import wait_for

TRACE = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


class Inbox:
    """What an observer would receive from one tap: batches, and the dropped counts they carry."""

    def __init__(self, block: bool = False, fail: int = 0) -> None:
        self.events: list[dict] = []
        self.dropped = 0
        self.called = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.fail = fail

    def send(self, events: list[dict], dropped: int) -> None:
        self.called.set()
        self.release.wait(30)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("observer unreachable")
        self.events += events
        self.dropped += dropped


def test_events_carry_the_agent_time_and_trace_id_and_arrive_in_order():
    inbox = Inbox()
    tap = ObserverTap("a-1", inbox.send, capacity=100, batch=7, interval=0.01, clock=lambda: 42.0)
    for n in range(30):
        tap.emit("message", TRACE if n % 2 else None, {"n": n})
    tap.close()
    assert [e["n"] for e in inbox.events] == list(range(30)) and inbox.dropped == 0
    assert inbox.events[1] == {"kind": "message", "agent": "a-1", "time": 42.0, "trace": "ab" * 16, "n": 1}
    assert inbox.events[0]["trace"] is None and trace_id("garbage") == "garbage"
    assert tap.status() == {"emitted": 30, "sent": 30, "dropped": 0, "queued": 0}


def test_a_stuck_observer_never_blocks_the_agent_and_what_overflows_is_counted_and_reported():
    inbox = Inbox(block=True)
    tap = ObserverTap("a-1", inbox.send, capacity=50, batch=500, interval=0.01)
    tap.emit("message", None, {"n": 0})
    assert inbox.called.wait(10), "the tap's thread took the first event and is stuck sending it"
    for n in range(1, 56):  # 55 more: 50 fit in the queue, 5 do not
        tap.emit("message", None, {"n": n})  # returns at once: the agent's thread never waits
    assert tap.status()["dropped"] == 5 and tap.status()["queued"] == 50
    inbox.release.set()
    tap.close()
    assert [e["n"] for e in inbox.events] == list(range(51)) and inbox.dropped == 5


def test_a_batch_the_observer_did_not_take_is_counted_as_dropped_and_reported_with_the_next():
    inbox = Inbox(fail=1)
    tap = ObserverTap("a-1", inbox.send, capacity=100, batch=10, interval=0.01)
    for n in range(4):
        tap.emit("action", None, {"n": n})
    wait_for(lambda: tap.status()["dropped"] == 4, timeout=10)  # the first send failed
    tap.emit("action", None, {"n": 4})
    tap.close()
    assert [e["n"] for e in inbox.events] == [4] and inbox.dropped == 4


@pytest.mark.ray
def test_an_observer_assembles_a_trace_across_the_agents_a_request_went_through(system):
    tag = uuid.uuid4().hex[:6]
    observer = system.spawn(Observer, f"observer-{tag}")
    watched = AgentConfig(observer=observer.agent_id)
    sink = system.spawn(Sink, f"sink-{tag}", config=watched)
    producer = system.spawn(Producer, f"prod-{tag}", config=watched)
    # The driver's request carries a trace; the producer's sends carry it on to the sink.
    env = make_envelope(Emit(to=sink.agent_id, start=0, count=20), producer.agent_id, traceparent=TRACE,
                        deadline=time.time() + 60)
    assert producer.ask_envelope(env) == 20
    wait_for(lambda: sink.ask(Report())["count"] == 20, timeout=60)
    events = wait_for(lambda: (got := observer.ask(GetTrace(trace="ab" * 16))) and len(got) >= 21 and got,
                      timeout=60)
    assert [(e["agent"], e["type"]) for e in events[:1]] == [(producer.agent_id, "test.emit@1")]
    assert sorted(e["agent"] for e in events[1:]) == [sink.agent_id] * 20
    assert all(e["kind"] == "message" and e["ok"] for e in events)
    stats = observer.ask(ObserverStats())
    assert stats[sink.agent_id]["received"] >= 21 and stats[sink.agent_id]["dropped"] == 0  # + the Report asks
    assert stats[producer.agent_id] == {"received": 1, "dropped": 0, "trimmed": 0}


@pytest.mark.ray
def test_decisions_and_governed_actions_are_events_of_their_trace_too(system, tmp_path):
    from tests.agents import Classify, Triage
    from tests.gov_agents import Act, Clerk

    tag = uuid.uuid4().hex[:6]
    observer = system.spawn(Observer, f"observer-{tag}")
    triage = system.spawn(Triage, f"triage-{tag}", config=AgentConfig(observer=observer.agent_id))
    clerk = system.spawn(Clerk, f"clerk-{tag}", config=AgentConfig(observer=observer.agent_id,
                                                                  grants=("shipping.create",)))
    triage.ask_envelope(make_envelope(Classify(ticket="t1", text="refund please"), triage.agent_id,
                                      traceparent=TRACE, deadline=time.time() + 60))
    ship = {"kind": "ship", "order": "A1", "log": str(tmp_path / "calls")}
    refund = {"kind": "refund", "order": "A1", "amount": 5, "log": str(tmp_path / "calls")}  # not granted
    clerk.ask_envelope(make_envelope(Act(actions=[ship, refund]), clerk.agent_id, traceparent=TRACE,
                                     deadline=time.time() + 60))
    events = wait_for(lambda: (got := observer.ask(GetTrace(trace="ab" * 16))) and len(got) >= 5 and got,
                      timeout=60)
    kinds = sorted((e["agent"].split("-")[0], e["kind"], e.get("choice") or e.get("code") or e["type"])
                   for e in events)
    assert kinds == [("clerk", "action", "ok"), ("clerk", "action", "refused"), ("clerk", "message", "govtest.act@1"),
                     ("triage", "decision", "refund"), ("triage", "message", "test.classify@1")]
