"""Held driver tells, without Ray: the bounded ordered buffer, the retry schedule, the pipeline.

The pipeline runs on a fake transport (an agent that can die, be away and
come back) and a fake clock; nothing here sleeps.
"""

from __future__ import annotations

import pytest

from protocols import Delivery, Message, make_envelope
from runtime import AgentUnavailable, AskTimeout, MailboxFull
from runtime._backoff import Backoff
from runtime._holding import HoldBuffer, Mode, Outcome, RetrySchedule, TellPipeline


class Note(Message, name="holdtest.note"):
    n: int


# -- the buffer -------------------------------------------------------------------------


def test_the_buffer_keeps_items_in_order_and_refuses_the_newest_past_its_bound():
    buf: HoldBuffer[int] = HoldBuffer(3)
    assert [buf.hold(i) for i in range(5)] == [True, True, True, False, False]
    assert len(buf) == 3 and buf.overflowed == 2
    assert buf.take_overflow() == ([3, 4], 0)
    assert buf.take() == [0, 1, 2]
    assert len(buf) == 0 and buf.take_overflow() == ([], 0)


def test_the_default_bound_is_one_thousand():
    buf: HoldBuffer[int] = HoldBuffer()
    held = sum(buf.hold(i) for i in range(1_500))
    assert (held, buf.overflowed, buf.take()[-1]) == (1_000, 500, 999)


def test_requeued_items_go_ahead_of_held_ones_in_their_own_order():
    buf: HoldBuffer[str] = HoldBuffer(10)
    buf.hold("new1")
    buf.hold("new2")
    buf.requeue("old1")  # failed in flight: told before anything held
    buf.requeue("old2")
    assert buf.take() == ["old1", "old2", "new1", "new2"]


def test_a_take_starts_a_new_generation_of_requeues_at_the_front():
    buf: HoldBuffer[str] = HoldBuffer(10)
    for item in ("a", "b", "c"):
        buf.hold(item)
    assert buf.take(1) == ["a"]  # "a" goes in flight alone
    buf.requeue("a")  # ... and fails: it is still the oldest
    assert buf.take() == ["a", "b", "c"]


def test_a_requeue_into_a_full_buffer_pushes_out_the_newest_held_item():
    buf: HoldBuffer[str] = HoldBuffer(2)
    buf.hold("new1")
    buf.hold("new2")
    assert buf.requeue("old") is True
    assert buf.take_overflow() == (["new2"], 0)
    assert buf.take() == ["old", "new1"]


def test_a_requeue_overflows_itself_when_everything_held_is_older():
    buf: HoldBuffer[str] = HoldBuffer(2)
    buf.requeue("old1")
    buf.requeue("old2")
    assert buf.requeue("old3") is False
    assert buf.take_overflow() == (["old3"], 0)
    assert buf.take() == ["old1", "old2"]


def test_overflow_past_what_is_kept_is_only_counted():
    buf: HoldBuffer[int] = HoldBuffer(1, keep_overflow=2)
    for i in range(6):
        buf.hold(i)
    assert buf.overflow_pending == 5
    assert buf.take_overflow() == ([1, 2], 3)
    buf.restore_overflow([1, 2], 3)  # recording failed: kept for the next try
    buf.hold(9)
    assert buf.take_overflow() == ([1, 2], 4)


def test_a_bound_below_one_is_refused():
    with pytest.raises(ValueError):
        HoldBuffer(0)


def test_the_retry_schedule_grows_then_resets():
    sched = RetrySchedule(Backoff(initial=0.1, factor=5.0, cap=0.5))
    assert sched.due(0.0)
    assert sched.missed(0.0) == 0.1 and not sched.due(0.05) and sched.due(0.1)
    assert sched.missed(0.1) == 0.5 and sched.missed(0.6) == 0.5  # capped at the last step
    sched.reset()
    assert sched.due(0.0)


# -- the pipeline, on a fake agent ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeAgent:
    """A transport to an agent whose process can die (calls fail) and be away (not registered)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.working = True  # handles what it is sent while the driver waits
        self.incarnation = 1
        self.alive = True
        self.registered = True
        self.found = 1  # the incarnation the ref talks to
        self.calls: dict[int, tuple[int, object]] = {}  # token -> (incarnation, envelope)
        self.settled: dict[int, Outcome] = {}
        self.effects: list[int] = []  # message bodies' n, in the order handled
        self.seen: set[bytes] = set()
        self.records: list[tuple[list[int], int]] = []
        self.next = 0

    # Transport
    def find(self) -> bool:
        if self.registered:
            self.found = self.incarnation
        return self.registered

    def send(self, env):
        self.next += 1
        self.calls[self.next] = (self.found, env, env.attempt)
        return self.next

    def record(self, envs, dropped, limit):
        self.next += 1
        self.calls[self.next] = (self.found, ("record", [e.body["n"] for e in envs], dropped), 0)
        return self.next

    def poll(self, tokens):
        out = []
        for t in tokens:
            if t not in self.settled:
                break
            out.append(self.settled[t])
        return out

    def wait(self, tokens, timeout):
        self.clock.now += timeout
        if self.working:
            self.run()

    # The agent's side
    def run(self, limit: int | None = None) -> None:
        """Handle pending calls in order (up to ``limit``); calls to a dead incarnation fail."""
        for token in sorted(t for t in self.calls if t not in self.settled)[:limit]:
            incarnation, env, _ = self.calls[token]
            if incarnation != self.incarnation or not self.alive:
                self.settled[token] = Outcome.FAILED
                continue
            if isinstance(env, tuple):
                self.records.append((env[1], env[2]))
            elif env.delivery is Delivery.AT_MOST_ONCE or env.id not in self.seen:
                self.seen.add(env.id)
                self.effects.append(env.body["n"])
            self.settled[token] = Outcome.DELIVERED

    def crash(self) -> None:
        self.alive = False
        self.registered = False

    def restart(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.registered = True


def env(n: int, delivery: Delivery = Delivery.EFFECTIVELY_ONCE):
    return make_envelope(Note(n=n), "agent", sender="driver", delivery=delivery)


def pipeline(agent: FakeAgent, clock: Clock, **kw) -> TellPipeline:
    return TellPipeline(agent, agent_id="agent", clock=clock, sleep=clock.sleep, **kw)


def test_tells_go_straight_to_a_live_agent():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock)
    for n in range(5):
        pipe.tell(env(n))
    agent.run()
    pipe.flush(1.0)
    assert agent.effects == [0, 1, 2, 3, 4]
    assert pipe.stats()["mode"] == "direct" and pipe.stats()["in_flight"] == 0


def test_tells_across_a_crash_take_effect_once_each_in_order():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock)
    for n in range(4):
        pipe.tell(env(n))
    agent.run(limit=2)  # 0 and 1 handled ...
    agent.seen.add(pipe._in_flight[2][1].id)  # ... and 2 took effect too, but its reply was lost
    agent.effects.append(2)
    agent.crash()
    agent.run()  # 2 and 3 fail with the process
    clock.now += 1
    for n in range(4, 7):  # told while the agent is away: held
        pipe.tell(env(n))
    assert pipe.mode is Mode.HOLDING and len(pipe.held) == 5  # 2, 3 (failed) then 4, 5, 6
    agent.restart()
    pipe.flush(5.0)
    assert agent.effects == [0, 1, 2, 3, 4, 5, 6]  # 2 was resent, deduplicated by its id
    resent = [a for _, e, a in agent.calls.values() if not isinstance(e, tuple) and e.body["n"] in (2, 3)]
    assert max(resent) == 2, "the failed ones went again as attempt 2"
    assert pipe.stats()["resent"] == 2 and pipe.mode is Mode.DIRECT


def test_at_most_once_tells_that_failed_in_flight_are_not_resent():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock)
    pipe.tell(env(0, Delivery.AT_MOST_ONCE))
    agent.crash()
    agent.run()
    clock.now += 1
    pipe.tell(env(1, Delivery.AT_MOST_ONCE))  # never sent yet: held, then sent once
    agent.restart()
    pipe.flush(5.0)
    assert agent.effects == [1]
    assert pipe.stats()["lost"] == 1


def test_the_oldest_held_tell_goes_alone_until_the_agent_takes_it():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock)
    pipe.tell(env(0))
    agent.crash()
    agent.run()
    clock.now += 1
    for n in range(1, 4):
        pipe.tell(env(n))
    agent.registered = True  # the dead actor is still registered under the name for a moment
    agent.found = agent.incarnation
    before = len(agent.calls)
    clock.now += 1
    pipe.pump()
    assert len(agent.calls) == before + 1 and pipe.mode is Mode.RESUMING
    agent.run()  # the probe fails: the old actor is dead
    clock.now += 1
    pipe.pump()
    assert pipe.mode is Mode.HOLDING and len(pipe.held) == 4, "it failed alone, not all four"
    agent.restart()
    pipe.flush(5.0)
    assert agent.effects == [0, 1, 2, 3]


def test_overflow_past_the_bound_is_recorded_as_dead_letters_once_the_agent_is_back():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock, limit=3)
    agent.crash()
    pipe.tell(env(0))
    agent.run()
    clock.now += 1
    for n in range(1, 6):
        pipe.tell(env(n))
    assert pipe.stats()["held"] == 3 and pipe.stats()["overflowed"] == 3
    agent.restart()
    pipe.flush(5.0)
    assert agent.effects == [0, 1, 2]
    assert agent.records == [([3, 4, 5], 0)]
    assert pipe.stats()["overflow_unrecorded"] == 0


def test_a_tell_never_waits_for_an_agent_that_stays_away():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock)
    agent.crash()
    pipe.tell(env(0))
    agent.run()
    for n in range(1, 50):
        clock.now += 0.01
        pipe.tell(env(n))
    assert clock.now == pytest.approx(0.49), "no tell slept"
    with pytest.raises(AgentUnavailable, match="still held"):
        pipe.flush(2.0)
    assert len(pipe.held) == 50


def test_a_full_queue_at_a_live_agent_refuses_new_tells():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock, max_in_flight=3)
    for n in range(3):
        pipe.tell(env(n))
    with pytest.raises(MailboxFull, match="not keeping up"):
        pipe.tell(env(3))
    agent.run()
    pipe.tell(env(3))  # answered meanwhile: room again
    agent.working = False
    with pytest.raises(AskTimeout):
        pipe.flush(0.5)  # the agent does not run the last one
    agent.working = True
    pipe.flush(0.5)
    assert agent.effects == [0, 1, 2, 3]


def test_a_failed_ask_holds_new_tells_until_older_ones_are_settled():
    clock = Clock()
    agent = FakeAgent(clock)
    pipe = pipeline(agent, clock)
    pipe.tell(env(0))
    agent.crash()
    pipe.agent_failed("an ask saw the process die")
    pipe.tell(env(1))
    assert pipe.mode is Mode.HOLDING and len(pipe.held) == 1
    agent.run()
    agent.restart()
    assert pipe.wait_until_settled(clock() + 5, answered=False)
    pipe.flush(5.0)
    assert agent.effects == [0, 1]
