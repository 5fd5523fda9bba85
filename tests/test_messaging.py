"""Agent-to-agent messaging on a real local Ray: effectively-once, FIFO, through crashes."""

from __future__ import annotations

import os
import signal

import pytest

from protocols import Delivery

from .agents import Emit, GetItems, Producer, Report, Sink
from .waiting import wait_for

pytestmark = pytest.mark.ray



def test_effectively_once_stream_survives_a_receiver_sigkill(system, agent_id):
    sink = system.spawn(Sink, f"{agent_id}-sink", init={"delay": 0.0001})
    producer = system.spawn(Producer, f"{agent_id}-src")
    # The items inherit the Emit's deadline: long enough to outlive a restart on a loaded machine
    # (an item that expires at the receiver is rightly dead-lettered, and the count falls short).
    for start in range(0, 10_000, 1000):
        producer.ask(Emit(to=sink.agent_id, start=start, count=1000), timeout=180)
    wait_for(lambda: sink.ask(Report())["count"] >= 2000, every=0.01)
    os.kill(sink.admin.status()["pid"], signal.SIGKILL)
    report = wait_for(lambda: (r := sink.ask(Report(), timeout=30)) and r["count"] >= 10_000 and r, timeout=180,
                      describe=lambda: (sink.ask(Report(), timeout=30), sink.admin.status()["dead_letters"]))
    assert sink.admin.status()["incarnation"] == 2, "the receiver was really killed and came back"
    assert report == {"count": 10_000, "dups": 0, "out_of_order": 0}
    assert sink.ask(GetItems()) == list(range(10_000))
    wait_for(lambda: not producer.admin.status()["outbox_pending"])


def test_sender_sigkilled_with_unacknowledged_outbox_delivers_after_restart(system, agent_id):
    sink = system.spawn(Sink, f"{agent_id}-sink", init={"delay": 0.0005})
    producer = system.spawn(Producer, f"{agent_id}-src", config={"window": 200, "max_batch": 100})
    producer.ask(Emit(to=sink.agent_id, start=0, count=3000), timeout=180)  # items inherit its deadline
    pending = producer.admin.status()["outbox_pending"]
    assert pending.get(sink.agent_id, 0) > 1000, pending
    os.kill(producer.admin.status()["pid"], signal.SIGKILL)
    report = wait_for(lambda: (r := sink.ask(Report())) and r["count"] >= 3000 and r, timeout=180,
                      describe=lambda: (sink.ask(Report()), sink.admin.status()["dead_letters"]))
    assert producer.admin.status()["incarnation"] == 2
    assert report == {"count": 3000, "dups": 0, "out_of_order": 0}
    assert producer.ask(Report()) == {"emitted": 3000}, "the emit is not redone: it was acknowledged"


def test_at_most_once_sends_are_not_retried(system, agent_id):
    sink = system.spawn(Sink, f"{agent_id}-sink")
    producer = system.spawn(Producer, f"{agent_id}-src")
    producer.ask(Emit(to=sink.agent_id, start=0, count=50, delivery=Delivery.AT_MOST_ONCE))
    report = wait_for(lambda: (r := sink.ask(Report())) and r["count"] >= 50 and r)
    assert report["dups"] == 0
    assert not producer.admin.status()["outbox_pending"], "at-most-once never touches the outbox"


def test_unknown_recipient_ends_in_dead_letters_and_can_be_replayed(system, agent_id):
    producer = system.spawn(Producer, f"{agent_id}-src", config={"max_attempts": 3, "retry_backoff": 0.01})
    producer.ask(Emit(to=f"{agent_id}-later", start=0, count=5))
    letters = wait_for(lambda: producer.admin.dead_letters(reason="undeliverable"))
    assert len(letters) == 5 and letters[0]["recipient"] == f"{agent_id}-later"
    sink = system.spawn(Sink, f"{agent_id}-later")
    results = producer.admin.replay_dead_letters(reason="undeliverable")
    assert [r["ok"] for r in results] == [True] * 5
    report = wait_for(lambda: (r := sink.ask(Report())) and r["count"] >= 5 and r)
    assert report == {"count": 5, "dups": 0, "out_of_order": 0}
    assert producer.admin.dead_letters() == []
