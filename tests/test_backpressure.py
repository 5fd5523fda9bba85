"""A slow receiver under 10x overload: bounded sender memory, nothing lost at-least-once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocols import Delivery

from .agents import Emit, Producer, Report, Sink

pytestmark = pytest.mark.ray


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_ten_times_overload_keeps_sender_memory_bounded_and_loses_nothing(system, agent_id):
    delay = 0.002  # the sink handles at most 500 messages/s
    sink = system.spawn(Sink, f"{agent_id}-sink", init={"delay": delay})
    window = 100
    producer = system.spawn(Producer, f"{agent_id}-src", config={"window": window, "max_batch": 50})
    pid = producer.admin.status()["pid"]
    before = rss_mb(pid)
    total, t0 = 0, time.monotonic()
    peak_in_memory = 0
    # Offer 2,500 messages as fast as the producer takes them: far more than
    # ten times what the sink can take.
    while total < 2500:
        producer.ask(Emit(to=sink.agent_id, start=total, count=250))
        total += 250
    rate = total / (time.monotonic() - t0)
    assert rate > 10 / delay, f"offered only {rate:.0f}/s, not a 10x overload"
    while (r := sink.ask(Report()))["count"] < total:
        status = producer.admin.status()
        peak_in_memory = max(peak_in_memory, status["outbox_in_memory"])
        assert sum(status["outbox_pending"].values()) <= total
        time.sleep(0.05)
    assert r == {"count": total, "dups": 0, "out_of_order": 0}, "nothing lost, nothing twice, in order"
    assert 0 < peak_in_memory <= window, f"in-memory messages peaked at {peak_in_memory} (bound {window})"
    assert rss_mb(pid) - before < 40, "the backlog waited on disk, not in the sender's memory"


def test_at_most_once_overload_fails_fast_and_every_message_is_accounted_for(system, agent_id):
    sink = system.spawn(Sink, f"{agent_id}-sink", init={"delay": 0.005})
    producer = system.spawn(Producer, f"{agent_id}-src", config={"window": 5})
    producer.ask(Emit(to=sink.agent_id, start=0, count=200, delivery=Delivery.AT_MOST_ONCE))
    dropped = producer.admin.dead_letters(reason="mailbox_full", limit=1000)
    assert dropped, "a full window refuses at-most-once sends at once"
    assert "window" in dropped[0]["message"]
    deadline = time.time() + 30
    while sink.ask(Report())["count"] + len(dropped) < 200 and time.time() < deadline:
        time.sleep(0.05)
    assert sink.ask(Report())["count"] + len(dropped) == 200


def test_a_driver_flooding_tells_is_refused_fast_instead_of_queueing_without_bound(system, agent_id):
    from runtime import MailboxFull

    from .agents import Add, Counter, GetCount, Sleep

    slow = system.spawn(Counter, agent_id)
    slow.max_unanswered = 20
    slow.tell(Sleep(seconds=1.0))
    accepted = 1
    with pytest.raises(MailboxFull, match="not keeping up"):
        for _ in range(100):
            slow.tell(Add(n=1))
            accepted += 1
    assert accepted == 20, "refused once 20 tells were queued"
    assert slow.ask(GetCount(), timeout=30) == accepted - 1, "every accepted tell was handled"
