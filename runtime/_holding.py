"""Driver tells held while their agent restarts: a bounded ordered buffer and the pipeline around it.

A driver's ``AgentRef.tell`` is one Ray call that nobody waits for.  When
the agent's process dies, the tells in flight fail (Ray's actor error) and
the agent is gone, or not yet registered again, for the time a restart
takes.  Those tells, and every tell made meanwhile, are *held* here in the
order they were told, at most ``limit`` of them (default 1,000), and
delivered in that order to the new incarnation: a new actor under the
agent's id (a supervisor's restart) or the same actor back (Ray's restart).

Semantics:

* A tell that failed in flight is sent again with the same message id and
  ``attempt + 1`` if it is AT_LEAST_ONCE or EFFECTIVELY_ONCE; the agent
  records every such id with its effect, so one that took effect before the
  crash (only its reply was lost) has no second effect.  An AT_MOST_ONCE
  tell that failed in flight is not sent again (counted in ``lost``); one
  told while the agent was down was never sent, and is sent once.
* Order: tells reach the new incarnation in the order they were told.
  (Across Ray's own restart of the same actor, tells made before the ref
  saw the failure may already have been queued by Ray to the restarted
  process ahead of the resent ones; effects stay exactly once, the order of
  those few may differ.  A supervisor's restart has no such window: the old
  actor is dead for good and every call to it fails.)
* Bound: past ``limit`` held tells the newest ones *overflow*: they are not
  delivered, and become dead letters with reason ``overflow`` in the
  agent's dead-letter store once it is back (replayable from there).  The
  envelopes of at most ``keep_overflow`` (default: ``limit``) of them are
  kept for that; beyond, only their number is, and one more dead letter
  says how many.  So a ref holds at most ``limit + keep_overflow`` envelopes.
* Resuming: once every older call has resolved, the agent is looked up by
  name (with a growing delay between misses); the oldest held tell goes
  alone, and when the new incarnation has taken it, the rest follow in
  order.  A dead actor still registered under the name, or one that dies
  again, therefore costs one failed call, not ``limit``.

Design: no thread; the driver's own calls move the pipeline.  Every
``tell``, every ``ask`` and an explicit ``AgentRef.flush()`` run one
non-blocking :meth:`TellPipeline.pump` (poll the calls in flight, look the
agent up when due, send what may be sent); ``ask`` and ``flush`` then wait
until nothing is held (``ask``, so a tell told before it is handled before
it) or until every tell is answered (``flush``).  Why not a background
thread: refs are cheap values, made per lookup and passed to other agents
(pickled); a thread per ref would have no owner to stop it, would need a lock
on the hot path of every tell, and would die with the driver's main thread
anyway, so a driver that must know its tells arrived calls ``flush()``
either way.  The cost: tells held while a driver makes no call wait for its
next call.  ``tell`` never blocks: it polls at most ``POLL_BATCH`` calls
and looks the agent up at most once.

Everything here is pure: Ray stays behind a :class:`Transport`, time is
passed in (``now``) or injected (``clock``, ``sleep``), so the bound, the
order and the overflow are unit-tested without Ray and without sleeping.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from protocols import Delivery, Envelope

from ._backoff import Backoff
from .exceptions import AgentUnavailable, AskTimeout, MailboxFull

__all__ = [
    "DEFAULT_HOLD_LIMIT",
    "HoldBuffer",
    "Mode",
    "Outcome",
    "RetrySchedule",
    "TellPipeline",
    "Transport",
]

#: Tells a ref holds while its agent is down, by default (the issue's bound).
DEFAULT_HOLD_LIMIT = 1_000
#: Calls in flight polled per pump: a tell's cost stays bounded whatever the backlog.
POLL_BATCH = 256
#: Seconds between polls of the calls in flight while nothing has failed.
POLL_INTERVAL = 0.02

T = TypeVar("T")


class HoldBuffer(Generic[T]):
    """A bounded FIFO of held items; overflow keeps the oldest, refuses the newest.

    Invariant: the buffer is in the order items were told (oldest first), and
    it holds the ``limit`` oldest items not delivered; every item that
    overflowed is newer than every item held.  Items come in two ways:
    :meth:`hold` (a new item, the newest of all) and :meth:`requeue` (an item
    that failed in flight: older than everything held, newer than the items
    requeued before it since the last :meth:`take`).
    """

    def __init__(self, limit: int = DEFAULT_HOLD_LIMIT, *, keep_overflow: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"a hold limit must be at least 1, got {limit}")
        self.limit = limit
        self.keep_overflow = limit if keep_overflow is None else keep_overflow
        self._items: collections.deque[T] = collections.deque()
        self._cursor = 0  # where the next requeued item goes
        self._overflow: list[T] = []
        self._overflow_dropped = 0  # overflowed beyond keep_overflow: counted, envelope not kept
        #: Items that ever overflowed.
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, item: T) -> bool:
        """Hold a new item (the newest); False if it overflowed instead."""
        if len(self._items) >= self.limit:
            self._spill(item)
            return False
        self._items.append(item)
        return True

    def requeue(self, item: T) -> bool:
        """Hold an item that failed in flight, ahead of every item held since; False if it overflowed.

        When full, the newest held item overflows to make room, unless the
        requeued item is itself the newest (everything held was requeued
        before it).
        """
        if len(self._items) >= self.limit:
            if self._cursor >= len(self._items):
                self._spill(item)
                return False
            self._spill(self._items.pop())
        self._items.insert(self._cursor, item)
        self._cursor += 1
        return True

    def take(self, n: int | None = None) -> list[T]:
        """Remove and return the ``n`` oldest items (all if None), to be sent.

        The caller sends them before anything held now, so what fails in
        flight from here on is requeued at the front again.
        """
        count = len(self._items) if n is None else min(n, len(self._items))
        out = [self._items.popleft() for _ in range(count)]
        self._cursor = 0
        return out

    def _spill(self, item: T) -> None:
        self.overflowed += 1
        if len(self._overflow) < self.keep_overflow:
            self._overflow.append(item)
        else:
            self._overflow_dropped += 1

    @property
    def overflow_pending(self) -> int:
        """Overflowed items not yet recorded as dead letters (kept or only counted)."""
        return len(self._overflow) + self._overflow_dropped

    def take_overflow(self) -> tuple[list[T], int]:
        """The overflowed items kept, and how many more were only counted; both reset."""
        items, dropped = self._overflow, self._overflow_dropped
        self._overflow, self._overflow_dropped = [], 0
        return items, dropped

    def restore_overflow(self, items: list[T], dropped: int) -> None:
        """Put back overflow that could not be recorded (the agent died again), ahead of newer overflow."""
        self._overflow[:0] = items
        self._overflow_dropped += dropped


class RetrySchedule:
    """When to look for a missing agent again: growing delays after each miss, reset once it answers."""

    #: 0.025, 0.05, 0.1, 0.2, then 0.4 s between looks.
    POLICY = Backoff(initial=0.025, factor=2.0, cap=0.4)

    def __init__(self, policy: Backoff = POLICY) -> None:
        self._policy = policy
        self._misses = 0
        self._next = 0.0

    def due(self, now: float) -> bool:
        return now >= self._next

    def missed(self, now: float) -> float:
        """Record a miss at ``now``; returns the delay until the next try."""
        delay = self._policy.delay(self._misses)
        self._misses += 1
        self._next = now + delay
        return delay

    def reset(self) -> None:
        self._misses = 0
        self._next = 0.0

    @property
    def next_at(self) -> float:
        return self._next


class Outcome(enum.Enum):
    """How one call in flight ended, as the pipeline needs to know it."""

    #: The agent took it (its reply, an error reply included, came back).
    DELIVERED = "delivered"
    #: The process died under it (Ray's actor error): it may or may not have taken effect.
    FAILED = "failed"


class Mode(enum.Enum):
    """Where new tells go."""

    #: Straight to the agent: nothing is held.
    DIRECT = "direct"
    #: Held: a call failed (or the agent is not registered) and the agent is not back yet.
    HOLDING = "holding"
    #: Held: the oldest held tell was sent alone to the agent found; waiting for it to be taken.
    RESUMING = "resuming"


class Transport(Protocol):
    """What the pipeline needs of Ray (``_ref._RayTransport`` implements it, over the ref's ``Route``)."""

    def find(self) -> bool:
        """Resolve the agent by name and use that actor from now on; False if it is not registered."""
        ...

    def send(self, env: Envelope) -> Any:
        """Start one delivery to the current actor; returns a token to poll."""
        ...

    def poll(self, tokens: Sequence[Any]) -> list[Outcome]:
        """Outcomes of the leading tokens that completed, in order, up to the first still pending."""
        ...

    def wait(self, tokens: Sequence[Any], timeout: float) -> None:
        """Block until the first token completes, or ``timeout`` seconds."""
        ...

    def record(self, envs: list[Envelope], dropped: int, limit: int) -> Any:
        """Record overflow dead letters at the current actor; returns a token to poll."""
        ...


class TellPipeline:
    """A driver ref's tells: in flight, held, resumed in order (see module docstring).

    Invariants:

    * every call in flight was told before every tell held;
    * nothing held is sent while a call older than it is in flight (it might
      still fail and need sending again first);
    * in ``DIRECT`` mode nothing is held.

    Thread-safe: a lock guards every step; waiting is done outside it, so a
    thread waiting in ``flush`` never stalls another thread's ``tell``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        limit: int = DEFAULT_HOLD_LIMIT,
        max_in_flight: int = 10_000,
        agent_id: str = "?",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._transport = transport
        self.held: HoldBuffer[Envelope] = HoldBuffer(limit)
        self.max_in_flight = max_in_flight
        self.agent_id = agent_id
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.mode = Mode.DIRECT
        self._in_flight: collections.deque[tuple[Any, Envelope]] = collections.deque()
        self._retry = RetrySchedule()
        self._next_poll = 0.0
        self._recording: tuple[Any, list[Envelope], int] | None = None
        #: Why the last call failed, while the agent is down.
        self.down: str | None = None
        #: AT_MOST_ONCE tells that failed in flight and were not sent again.
        self.lost = 0
        #: Tells sent again after failing in flight.
        self.resent = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "in_flight": len(self._in_flight),
            "held": len(self.held),
            "overflowed": self.held.overflowed,
            "overflow_unrecorded": self.held.overflow_pending + self._recording_count(),
            "resent": self.resent,
            "lost": self.lost,
            "down": self.down,
        }

    def _recording_count(self) -> int:
        return 0 if self._recording is None else len(self._recording[1]) + self._recording[2]

    # -- telling ------------------------------------------------------------------

    def tell(self, env: Envelope) -> None:
        """Send ``env`` now if nothing is held, else hold it (or let it overflow); never blocks."""
        with self._lock:
            self._tell(env)

    def _tell(self, env: Envelope) -> None:
        self._pump()
        if self.mode is Mode.DIRECT:
            if len(self._in_flight) >= self.max_in_flight:
                self._reap(self._clock(), force=True)
                if self.mode is Mode.DIRECT and len(self._in_flight) >= self.max_in_flight:
                    raise MailboxFull(
                        f"{len(self._in_flight)} tells to {self.agent_id!r} are still queued (max_unanswered="
                        f"{self.max_in_flight}): the agent is not keeping up; retry later or ask instead",
                        agent_id=self.agent_id,
                    )
            if self.mode is Mode.DIRECT:
                self._in_flight.append((self._transport.send(env), env))
                return
        self.held.hold(env)

    def agent_failed(self, why: str) -> None:
        """Another call (an ask) saw the process die: hold new tells until the older ones are settled."""
        with self._lock:
            self.down = why
            if self._in_flight and self.mode is Mode.DIRECT:
                self.mode = Mode.HOLDING

    # -- moving -------------------------------------------------------------------

    def pump(self) -> None:
        """One non-blocking step: poll what is in flight, look the agent up when due, send what may go."""
        with self._lock:
            self._pump()

    def _pump(self) -> None:
        now = self._clock()
        self._reap(now)
        if self.mode is Mode.DIRECT or self._in_flight:
            return  # nothing held, or older calls still unsettled: nothing held may overtake them
        if self.mode is Mode.RESUMING:
            # The probe was taken (else _reap would have gone back to HOLDING): the rest follow in order.
            self._send_held(self.held.take())
            self.mode = Mode.DIRECT
            self.down = None
            self._record_overflow()
            return
        if not self._retry.due(now):
            return
        if not self._transport.find():
            self._retry.missed(now)
            return
        if not len(self.held):
            self.mode = Mode.DIRECT
            self.down = None
            self._record_overflow()
            return
        self._send_held(self.held.take(1))
        self.mode = Mode.RESUMING

    def _send_held(self, envs: list[Envelope]) -> None:
        for env in envs:
            self._in_flight.append((self._transport.send(env), env))

    def _reap(self, now: float, *, force: bool = False) -> None:
        if self._recording is not None:
            token, envs, dropped = self._recording
            done = self._transport.poll([token])
            if done:
                self._recording = None
                if done[0] is Outcome.FAILED:  # down again: recorded on the way back (see pump)
                    self.held.restore_overflow(envs, dropped)
                    if self.mode is Mode.DIRECT:
                        self.mode = Mode.HOLDING
                        self._retry.missed(now)
        if not self._in_flight:
            return
        if self.mode is Mode.DIRECT and not force and now < self._next_poll:
            return
        self._next_poll = now + POLL_INTERVAL
        tokens = [token for token, _ in _head(self._in_flight, POLL_BATCH)]
        for outcome in self._transport.poll(tokens):
            _, env = self._in_flight.popleft()
            if outcome is Outcome.DELIVERED:
                self._retry.reset()
                continue
            self.down = self.down or "its process died under a call"
            if self.mode is not Mode.HOLDING:
                self.mode = Mode.HOLDING
                self._retry.missed(now)  # the name is likely still the dead actor's for a moment
            if env.delivery is Delivery.AT_MOST_ONCE:
                self.lost += 1  # sent once already: it may have taken effect
                continue
            env.attempt += 1
            self.resent += 1
            self.held.requeue(env)

    def _record_overflow(self) -> None:
        if self._recording is None and self.held.overflow_pending:
            envs, dropped = self.held.take_overflow()
            self._recording = (self._transport.record(envs, dropped, self.held.limit), envs, dropped)

    # -- waiting (ask, flush) -----------------------------------------------------------

    def settled(self, *, answered: bool) -> bool:
        """Nothing held (and, with ``answered``, nothing in flight and the overflow recorded)."""
        if answered:
            return self.mode is Mode.DIRECT and not self._in_flight and self._recording is None \
                and not self.held.overflow_pending
        return self.mode is Mode.DIRECT

    def wait_until_settled(self, deadline: float, *, answered: bool) -> bool:
        """Pump until :meth:`settled` or the ``deadline`` (a ``clock`` time); True if settled."""
        while True:
            with self._lock:
                self._reap(self._clock(), force=True)  # waiting: poll now, not at the next poll interval
                self._pump()
                if self.settled(answered=answered):
                    return True
                pending = [t for t, _ in _head(self._in_flight, 1)]
                if self._recording is not None:
                    pending.append(self._recording[0])
                retry_at = self._retry.next_at
            now = self._clock()
            if now >= deadline:
                return False
            if pending:
                self._transport.wait(pending, min(0.1, deadline - now))
            else:
                self._sleep(max(0.0, min(retry_at - now, deadline - now, 0.1)))

    def flush(self, timeout: float) -> None:
        """Block until every tell is answered by the agent and any overflow recorded, or raise."""
        if self.wait_until_settled(self._clock() + timeout, answered=True):
            return
        if self.mode is not Mode.DIRECT:
            raise AgentUnavailable(
                f"agent {self.agent_id!r} is down ({self.down or 'not registered'}): {len(self.held)} tell(s) "
                f"still held after {timeout}s; they go with this ref's next call",
                agent_id=self.agent_id,
            )
        raise AskTimeout(
            f"{len(self._in_flight)} tell(s) to {self.agent_id!r} not answered within {timeout}s",
            where="caller",
        )


def _head(items: collections.deque[T], n: int) -> list[T]:
    out = []
    for item in items:
        if len(out) >= n:
            break
        out.append(item)
    return out
