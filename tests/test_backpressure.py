"""A slow receiver under 10x overload: bounded sender memory, nothing lost at-least-once."""

from __future__ import annotations

import fcntl
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


def test_ten_times_overload_keeps_sender_memory_bounded_and_loses_nothing(system, agent_id, tmp_path):
    # The overload is made, not hoped for: while the test holds the gate the
    # sink handles nothing, so all 2,500 messages offered are backlog (25 times
    # the window) however fast or loaded the machine is.  Then it drains at its
    # own pace (at most 500 messages/s).
    gate = tmp_path / "gate"
    gate.touch()
    window = 100
    with open(gate) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        sink = system.spawn(Sink, f"{agent_id}-sink", init={"delay": 0.002, "gate": str(gate)})
        producer = system.spawn(Producer, f"{agent_id}-src", config={"window": window, "max_batch": 50})
        pid = producer.admin.status()["pid"]
        before = rss_mb(pid)
        total = 0
        while total < 2500:
            producer.ask(Emit(to=sink.agent_id, start=total, count=250))
            total += 250
        status = producer.admin.status()
        backlog = sum(status["outbox_pending"].values())
        assert backlog == total, f"the sink took {total - backlog} of {total} through a closed gate"
        assert backlog >= 10 * window, "not a 10x overload of the window"
        peak_in_memory = status["outbox_in_memory"]
        fcntl.flock(held, fcntl.LOCK_UN)
    while (r := sink.ask(Report()))["count"] < total:
        status = producer.admin.status()
        peak_in_memory = max(peak_in_memory, status["outbox_in_memory"])
        assert sum(status["outbox_pending"].values()) <= total
        time.sleep(0.05)
    assert r == {"count": total, "dups": 0, "out_of_order": 0}, "nothing lost, nothing twice, in order"
    assert 0 < peak_in_memory <= window, f"in-memory messages peaked at {peak_in_memory} (bound {window})"
    assert rss_mb(pid) - before < 40, "the backlog waited on disk, not in the sender's memory"


def test_at_most_once_overload_fails_fast_and_every_message_is_accounted_for(system, agent_id, tmp_path):
    # The sink is held at a gate while the producer sends, so its window of 5
    # fills whatever the machine's speed (a loaded machine once sent slower than
    # the sink handled, and nothing overflowed).
    gate = tmp_path / "gate"
    gate.touch()
    with open(gate) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        sink = system.spawn(Sink, f"{agent_id}-sink", init={"delay": 0.005, "gate": str(gate)})
        producer = system.spawn(Producer, f"{agent_id}-src", config={"window": 5})
        producer.ask(Emit(to=sink.agent_id, start=0, count=200, delivery=Delivery.AT_MOST_ONCE))
        dropped = producer.admin.dead_letters(reason="mailbox_full", limit=1000)
        assert len(dropped) >= 200 - 5, "a full window refuses at-most-once sends at once"
        assert all("window 5" in d["message"] for d in dropped)
        fcntl.flock(held, fcntl.LOCK_UN)
    deadline = time.time() + 60
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
