"""An ask's retry policy (``runtime._ask_retry.AskRetry``), driven with fakes and an injected clock: no Ray, no sleeps.

``AgentRef.ask`` and ``ask_async`` only wait as this policy says; what it
decides between attempts is checked here: held tells first, how long an
attempt may wait, which failures are retried and how, and the pauses.
"""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from protocols import Delivery, Message, make_envelope
from protocols.exceptions import DeadlineExpired
from runtime import AgentStartError, AgentUnavailable, AskTimeout, DataDirectoryError, Fenced, NotDurable
from runtime._ask_retry import ASK_BACKOFF, DEADLINE_GRACE, AskRetry, Next
from runtime._backoff import Backoff

T0 = 1_000.0


class Question(Message, name="test.ask_retry.question"):
    n: int = 0


class Clock:
    """Wall-clock seconds, moved only by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Tells:
    """The ref's held tells, as the policy sees them."""

    def __init__(self, *, settled: bool = True, down: str | None = None) -> None:
        self.is_settled = settled
        self.down = down
        self.failures: list[str] = []

    def settled(self, *, answered: bool) -> bool:
        assert answered is False, "an ask waits only for held tells, not for every tell to be answered"
        return self.is_settled

    def agent_failed(self, why: str) -> None:
        self.failures.append(why)
        self.down = why


def _retry(*, timeout: float = 10.0, delivery: Delivery | None = None, tells: Tells | None = None,
           clock: Clock | None = None, backoff: Backoff = ASK_BACKOFF) -> tuple[AskRetry, Tells, Clock]:
    clock = clock or Clock()
    tells = tells or Tells()
    env = make_envelope(Question(), "agent-1", deadline=clock() + timeout, delivery=delivery)
    return AskRetry(env, tells, agent_id="agent-1", clock=clock, backoff=backoff), tells, clock


def _died(text: str = "The actor died unexpectedly before finishing this task.") -> RayActorError:
    """Ray's error for a call whose actor died (its message as Ray writes it)."""
    return RayActorError(error_msg=text)


def _creation_failed() -> ActorDiedError:
    """Ray's error for an actor whose constructor raised, built as Ray builds it."""
    task = RayTaskError("AgentHost.__init__", "Traceback (most recent call last):\nDataDirectoryError: gone",
                        DataDirectoryError("gone"))
    return ActorDiedError.from_task_error(task)


# -- before the first attempt ------------------------------------------------------------


def test_an_ask_whose_deadline_has_passed_is_refused_before_it_is_sent():
    clock = Clock()
    env = make_envelope(Question(), "agent-1", deadline=T0 - 0.1)
    with pytest.raises(DeadlineExpired) as info:
        AskRetry(env, Tells(), agent_id="agent-1", clock=clock)
    assert "before sending test.ask_retry.question" in str(info.value)


def test_an_ask_without_a_deadline_is_a_programming_error():
    env = make_envelope(Question(), "agent-1")
    with pytest.raises(ValueError, match="needs a deadline"):
        AskRetry(env, Tells(), agent_id="agent-1", clock=Clock())


# -- held tells first ----------------------------------------------------------------------


def test_with_nothing_held_an_attempt_waits_for_no_tell():
    retry, _, _ = _retry(tells=Tells(settled=True))
    assert retry.held_first() is None


def test_held_tells_go_first_for_at_most_what_is_left_of_the_deadline():
    retry, tells, clock = _retry(timeout=10.0, tells=Tells(settled=False))
    clock.now += 4.0
    assert retry.held_first() == pytest.approx(6.0)
    clock.now += 7.0
    assert retry.held_first() == 0.0, "past the deadline: no time left, never negative"
    tells.is_settled = True
    assert retry.held_first() is None


def test_tells_still_held_at_the_deadline_mean_the_agent_is_down():
    retry, _, _ = _retry(tells=Tells(settled=False, down="its process died under a call"))
    error = retry.still_held()
    assert isinstance(error, AgentUnavailable)
    assert "went down (its process died under a call)" in str(error)
    assert error.details == {"agent_id": "agent-1", "attempts": 1}


def test_tells_held_because_the_agent_is_not_registered_say_so():
    retry, _, _ = _retry(tells=Tells(settled=False, down=None))
    assert "went down (not registered)" in str(retry.still_held())


# -- one attempt ---------------------------------------------------------------------------


def test_an_attempt_waits_for_its_reply_until_the_deadline_plus_the_grace():
    retry, _, clock = _retry(timeout=10.0)
    clock.now += 2.5
    assert retry.reply_wait() == pytest.approx(7.5 + DEADLINE_GRACE)


def test_past_the_deadline_no_attempt_is_made_and_the_caller_reports_the_expiry():
    retry, _, clock = _retry(timeout=1.0)
    clock.now += 1.0
    with pytest.raises(AskTimeout) as info:
        retry.reply_wait()
    assert info.value.details == {"deadline": T0 + 1.0, "where": "caller", "attempts": 1}
    assert "expired at the caller" in str(info.value)


def test_no_reply_by_the_deadline_is_an_ask_timeout_at_the_caller_counting_the_attempts():
    retry, _, _ = _retry()
    retry.next_attempt(moved=True)
    error = retry.timed_out()
    assert isinstance(error, AskTimeout) and error.details["where"] == "caller"
    assert error.details["attempts"] == 2 and "after 2 attempt(s)" in str(error)


# -- failed attempts -----------------------------------------------------------------------


def test_a_process_that_died_sends_the_next_attempt_after_the_agent_and_holds_new_tells():
    retry, tells, clock = _retry(timeout=1.0)
    assert retry.failed(_died("The actor died unexpectedly.\nmore detail")) is Next.FOLLOW
    assert tells.failures == ["The actor died unexpectedly."], "tells in flight go again before the next attempt"
    clock.now += 1.0
    with pytest.raises(AgentUnavailable) as info:  # not back by the deadline: down, not a mere timeout
        retry.reply_wait()
    assert "went down (The actor died unexpectedly.)" in str(info.value)


def test_an_at_most_once_ask_is_never_sent_twice_when_the_process_died():
    retry, tells, _ = _retry(delivery=Delivery.AT_MOST_ONCE)
    with pytest.raises(AgentUnavailable) as info:
        retry.failed(_died())
    assert isinstance(info.value.__cause__, RayActorError)
    assert tells.failures, "the ref's tells learn of the death all the same"


def test_an_agent_whose_host_could_not_be_created_is_not_asked_again():
    retry, _, _ = _retry()
    with pytest.raises(AgentStartError) as info:
        retry.failed(_creation_failed())
    assert "DataDirectoryError: gone" in str(info.value)


def test_an_answer_from_a_replaced_incarnation_sends_the_next_attempt_after_its_successor():
    retry, tells, clock = _retry(timeout=1.0)
    assert retry.failed(Fenced("epoch 3 was replaced", agent_id="agent-1", epoch=3)) is Next.FOLLOW
    assert tells.failures == [], "the process is alive: nothing in flight was lost"
    clock.now += 1.0
    with pytest.raises(AgentUnavailable, match="a replaced incarnation answered"):
        retry.reply_wait()


@pytest.mark.parametrize("error", [Fenced("replaced"), NotDurable("not shipped")], ids=["fenced", "not-durable"])
def test_an_at_most_once_ask_raises_the_agents_answer_as_it_is(error):
    retry, _, _ = _retry(delivery=Delivery.AT_MOST_ONCE)
    with pytest.raises(type(error)) as info:
        retry.failed(error)
    assert info.value is error


def test_not_durable_is_asked_again_after_a_pause_while_the_deadline_allows():
    retry, _, _ = _retry(timeout=10.0)
    assert retry.failed(NotDurable("journal not shipped")) is Next.WAIT
    assert retry.next_attempt(moved=False) == ASK_BACKOFF.delay(0)
    assert retry.env.attempt == 2, "the same message id goes again, one attempt later"


def test_not_durable_is_raised_once_the_next_pause_would_reach_the_deadline():
    retry, _, clock = _retry(timeout=1.0, backoff=Backoff(initial=0.5, factor=1.0))
    clock.now += 0.4
    assert retry.failed(NotDurable("journal not shipped")) is Next.WAIT
    retry.next_attempt(moved=False)
    clock.now += 0.1  # 0.5 left: the next pause of 0.5 would reach the deadline
    error = NotDurable("journal still not shipped")
    with pytest.raises(NotDurable) as info:
        retry.failed(error)
    assert info.value is error


# -- between attempts ----------------------------------------------------------------------


def test_an_agent_found_on_a_new_host_is_asked_again_at_once():
    retry, _, _ = _retry()
    retry.failed(_died())
    assert retry.next_attempt(moved=True) == 0.0
    assert retry.env.attempt == 2


def test_pauses_grow_by_the_backoff_while_no_new_host_is_found_and_never_pass_the_deadline():
    retry, _, clock = _retry(timeout=0.25, backoff=Backoff(initial=0.0625, factor=2.0))  # binary fractions: exact
    pauses = []
    while True:
        try:
            retry.reply_wait()
        except AgentUnavailable:
            break
        assert retry.failed(_died()) is Next.FOLLOW
        pauses.append(retry.next_attempt(moved=False))
        clock.now += pauses[-1]
    assert pauses == [0.0625, 0.125, 0.0625], "0.0625 then 0.125, then cut to the 0.0625 left"
    assert retry.env.attempt == 4


def test_a_whole_ask_through_a_restart_as_a_waiter_drives_it():
    """The waiters' loop with a scripted host: it dies, is not registered again yet, then answers."""
    retry, tells, clock = _retry(timeout=5.0, tells=Tells(settled=False, down="an earlier tell failed"))
    answers = iter([_died(), "the reply"])
    lookups = iter([False])  # no other actor serves the agent yet: pause, then the same one again
    waited, attempts = [], []
    while True:
        budget = retry.held_first()
        if budget is not None:
            waited.append(budget)
            tells.is_settled = True  # the waiter waits; the held tells are delivered meanwhile
            continue
        retry.reply_wait()
        attempts.append(retry.env.attempt)
        answer = next(answers)
        if not isinstance(answer, Exception):
            break
        moved = retry.failed(answer) is Next.FOLLOW and next(lookups)
        clock.now += retry.next_attempt(moved)
        if not moved:
            tells.is_settled = False  # the death held new tells: they go before the next attempt
    assert (answer, attempts, waited) == ("the reply", [1, 2], [5.0, pytest.approx(5.0 - ASK_BACKOFF.delay(0))])
