"""Agent-to-agent messaging on a real local Ray: effectively-once, FIFO, through crashes."""

from __future__ import annotations

import os
import signal
import threading
import time

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


def test_a_graceful_stop_delivers_the_outbox_first_even_to_a_recipient_that_comes_late(system, agent_id):
    """Sends still pending when an agent is stopped for good (a pool's worker scaled down) are delivered
    by its stop, retries included, within ``stop_drain``: nothing is left stranded in a stopped outbox."""
    producer = system.spawn(Producer, f"{agent_id}-src", config={"stop_drain": 120, "retry_backoff_max": 0.5})
    producer.ask(Emit(to=f"{agent_id}-late", start=0, count=5))
    wait_for(lambda: producer.admin.status()["outbox_pending"].get(f"{agent_id}-late") == 5)
    stopped: list = []
    stopping = threading.Thread(target=lambda: stopped.append(system.stop(producer.agent_id, timeout=180)))
    stopping.start()
    sink = system.spawn(Sink, f"{agent_id}-late")  # only now: the stop has to wait for it
    stopping.join(timeout=180)
    assert stopped and stopped[0]["state"] == "stopped", stopped
    assert sink.ask(Report()) == {"count": 5, "dups": 0, "out_of_order": 0}
    assert stopped[0]["outbox_pending"] == {}, "nothing left in the stopped agent's outbox"


def test_sends_carry_the_handled_messages_deadline_unless_sent_without_it(system, agent_id):
    """Items sent while handling an ask with a 2 s deadline expire with it; sent with
    ``inherit_deadline=False`` they reach a recipient that only comes after that deadline."""
    fast = {"retry_backoff": 0.05, "retry_backoff_max": 0.2}
    bound = system.spawn(Producer, f"{agent_id}-bound", config=fast)
    free = system.spawn(Producer, f"{agent_id}-free", config=fast)
    asked = time.time()
    bound.ask(Emit(to=f"{agent_id}-late", start=0, count=3), timeout=2)
    free.ask(Emit(to=f"{agent_id}-late", start=0, count=3, detached=True), timeout=2)
    wait_for(lambda: time.time() > asked + 2.5, timeout=30)  # the condition is the deadline itself
    sink = system.spawn(Sink, f"{agent_id}-late")
    for producer in (free, bound):
        wait_for(lambda p=producer: not p.admin.status()["outbox_pending"], describe=producer.admin.status)
    assert sink.ask(GetItems()) == [0, 1, 2], "the detached items were handled; the bound ones were not"
    letters = sink.admin.dead_letters()  # the bound ones arrived expired: dead letters at the recipient
    assert sorted(letter["reason"] for letter in letters) == ["expired"] * 3, letters
