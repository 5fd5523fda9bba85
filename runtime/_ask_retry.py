"""One ask's retry policy: what happens between attempts, apart from how the caller waits.

An ask is sent, and when its attempt fails it is sent again with the same
message id (``attempt + 1``) until its deadline.  Two waiters drive the same
:class:`AskRetry`: ``AgentRef.ask_envelope`` blocks its thread (``ray.get``,
``time.sleep``), ``AgentRef.ask_async`` awaits on the event loop.  They
differ only in how they wait; every decision is taken here:

1. Before each attempt, held tells go first (:meth:`AskRetry.held_first`):
   nothing a driver told before the ask may be overtaken by it.  If they are
   still held when the deadline comes, the agent is down:
   :meth:`AskRetry.still_held` is the error (AgentUnavailable).
2. The attempt may wait for its reply until the deadline plus
   ``DEADLINE_GRACE`` (:meth:`AskRetry.reply_wait`; past the deadline, the
   error to raise instead).  No reply by then: :meth:`AskRetry.timed_out`.
3. A failed attempt is classified (:meth:`AskRetry.failed`): raise, or try
   again, after looking for the agent's current host (``Next.FOLLOW``) or
   after a pause (``Next.WAIT``).
4. :meth:`AskRetry.next_attempt` counts the attempt and says how long to
   pause first: not at all when the agent was found on a new host, else the
   backoff, cut short by the deadline.

The waiter's loop, sync form (the async one awaits instead)::

    retry = AskRetry(env, tells, agent_id=...)
    while True:
        budget = retry.held_first()
        if budget is not None and not <wait up to budget for the held tells>:
            raise retry.still_held()
        wait = retry.reply_wait()
        try:
            return <send env to route.handle, wait at most `wait` for the reply>
        except <no reply in time>:
            raise retry.timed_out()
        except (RayActorError, Fenced, NotDurable) as exc:
            moved = retry.failed(exc) is Next.FOLLOW and route.follow()
            pause = retry.next_attempt(moved)
            if pause:
                <sleep pause>

Everything here is pure: the held tells are a collaborator (``HeldTells``),
the clock is injected, so the policy is unit-tested without Ray and without
sleeping.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Protocol

from ray.exceptions import RayActorError

from protocols import Delivery, Envelope

from ._backoff import Backoff
from ._boundary import creation_failed, from_ray
from .exceptions import AgentUnavailable, AskTimeout, Fenced

__all__ = ["ASK_BACKOFF", "DEADLINE_GRACE", "AskRetry", "HeldTells", "Next"]

#: Seconds between attempts while the agent is down and no new host is found
#: (none when a new host is found: the retry goes there at once).
ASK_BACKOFF = Backoff(initial=0.01, factor=2.0, cap=0.4)  # 0.01, 0.02, ... 0.32, then 0.4

#: Seconds past the deadline a caller still waits for an answer.  A hop that
#: finds the deadline expired answers with DeadlineExpired saying where; the
#: caller gives that typed answer this long to arrive before it reports its
#: own AskTimeout ("expired at the caller").
DEADLINE_GRACE = 0.5


class HeldTells(Protocol):
    """What the policy needs of the ref's held tells (``_holding.TellPipeline`` is one)."""

    #: Why the last tell failed, while the agent is down.
    down: str | None

    def settled(self, *, answered: bool) -> bool:
        """Nothing held (with ``answered=False``, all the policy asks)."""
        ...

    def agent_failed(self, why: str) -> None:
        """An ask saw the agent's process die: hold new tells until the older ones are settled."""
        ...


class Next(enum.Enum):
    """What a failed attempt calls for before the next one (when it does not raise)."""

    #: The host died, or a replaced incarnation answered: look the agent up; if it
    #: moved to another actor, the next attempt goes there at once.
    FOLLOW = "follow"
    #: The agent answered NotDurable (SYNC, not yet shipped): pause, then ask again.
    WAIT = "wait"


class AskRetry:
    """One ask's attempts: the decisions its waiter follows (see the module docstring).

    Every attempt carries the same message id, so the agent handles it once;
    an AT_MOST_ONCE message keeps no such record, so it is never sent again.
    Raises DeadlineExpired at once if ``env``'s deadline has already passed.
    """

    def __init__(self, env: Envelope, tells: HeldTells, *, agent_id: str,
                 clock: Callable[[], float] = time.time, backoff: Backoff = ASK_BACKOFF) -> None:
        if env.deadline is None:
            raise ValueError(f"an ask needs a deadline: {env.type} to {agent_id!r} has none")
        self.env = env
        self.agent_id = agent_id
        self._deadline: float = env.deadline
        self._tells = tells
        self._clock = clock
        self._backoff = backoff
        self._retries = 0  # failed attempts so far: the backoff's attempt number
        #: Why the last attempt failed, while retrying (None: it did not fail, or answered).
        self.down: str | None = None
        env.check_deadline(f"{env.sender or 'caller'} before sending {env.type} to {agent_id!r}", now=clock())

    # -- before an attempt -----------------------------------------------------------

    def held_first(self) -> float | None:
        """None if no held tell may be overtaken; else seconds left (>= 0) to wait for them."""
        if self._tells.settled(answered=False):
            return None
        return max(0.0, self._deadline - self._clock())

    def still_held(self) -> Exception:
        """The error when held tells were still held at the deadline: the agent is down."""
        self.down = self._tells.down or "not registered"
        return self.expired()

    def reply_wait(self) -> float:
        """Seconds the attempt may wait for its reply (deadline plus grace); raises past the deadline."""
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise self.expired()
        return remaining + DEADLINE_GRACE

    # -- after an attempt --------------------------------------------------------------

    def timed_out(self) -> AskTimeout:
        """The error when an attempt got no reply by the deadline plus grace."""
        env = self.env
        return AskTimeout(
            f"ask {env.type} to {self.agent_id!r} got no reply before its deadline "
            f"({self._deadline:.3f}, after {env.attempt} attempt(s)); expired at the caller",
            deadline=self._deadline,
            where="caller",
            attempts=env.attempt,
        )

    def failed(self, exc: Exception) -> Next:
        """An attempt failed with ``exc`` (RayActorError, Fenced or NotDurable): raise, or what to do next.

        * The process died (RayActorError): it may come back as the same actor
          (Ray's restart) or as a new actor under the same name (a supervisor's
          restart, a spare, a move to another node): look for a new host.
          Tells in flight from the same ref go again before the next attempt.
          Raised at once if the message is AT_MOST_ONCE or the actor's
          creation failed.
        * A replaced incarnation answered (Fenced): look for its successor.
        * Handled and committed, not yet shipped (NotDurable, SYNC): wait and
          ask again while the deadline allows, then raise it.
        """
        env = self.env
        if isinstance(exc, RayActorError):
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._tells.agent_failed(why)  # tells in flight go again before the next attempt
            if env.delivery is Delivery.AT_MOST_ONCE or creation_failed(exc):
                raise from_ray(exc, self.agent_id, what="ask") from exc
            self.down = why
            return Next.FOLLOW
        if env.delivery is Delivery.AT_MOST_ONCE:
            raise exc
        if isinstance(exc, Fenced):
            self.down = "a replaced incarnation answered"
            return Next.FOLLOW
        if self._clock() + self._delay() >= self._deadline:  # NotDurable
            raise exc
        return Next.WAIT

    def next_attempt(self, moved: bool) -> float:
        """Count the next attempt; seconds to pause before it (0 if the agent ``moved`` to a new host)."""
        pause = 0.0 if moved else min(self._delay(), max(0.0, self._deadline - self._clock()))
        self._retries += 1
        self.env.attempt += 1
        return pause

    def expired(self) -> Exception:
        """The error for a deadline passed between attempts: AgentUnavailable if the agent was down."""
        env = self.env
        if self.down is not None:
            return AgentUnavailable(
                f"agent {self.agent_id!r} went down ({self.down}) and did not come back before the "
                f"deadline of {env.type} ({env.attempt} attempt(s))",
                agent_id=self.agent_id,
                attempts=env.attempt,
            )
        return self.timed_out()

    def _delay(self) -> float:
        return self._backoff.delay(self._retries)
