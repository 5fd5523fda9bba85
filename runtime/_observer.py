"""The observer: a copy of what watched agents do, assembled into traces, never in their way.

An agent whose ``AgentConfig.observer`` names an observer agent emits an *event*
for every message it handles (``message``: id, type, sender, ok, seconds), every
decision it records (``decision``: id, choice) and every governed action its
gateway settles (``action``: key, tag, code, seconds), each with the agent's id,
the time and the trace id (the trace-id part of the message's ``traceparent``;
``Agent.send`` passes the traceparent on, so one trace spans the agents a
request went through).

Emitting is :meth:`ObserverTap.emit`: one append to a bounded in-memory queue
(``observer_queue`` events) under a lock, on the agent's thread.  That is the
whole cost to the agent (about a microsecond an event; never a wait, never
I/O).  A full queue drops the event and counts it.  The tap's own thread sends
what is queued to the observer every ``interval`` seconds, as at-most-once
:class:`Observed` messages of at most ``batch`` events, each carrying how many
events were dropped since the last one; a send that fails counts its events as
dropped too.  Nothing is lost silently: the observer knows, per agent, how
many events it never got.  Events are emitted when handled, before the commit
(a handler that fails is a ``message`` event with ``ok`` false).

:class:`Observer` is the agent that receives them: it keeps the events by trace
(at most ``keep``; the oldest are dropped first, and counted) and answers
:class:`GetTrace` (every event of a trace, across agents, in time order) and
:class:`ObserverStats` (per agent: events received, events dropped).

Invariant: ``received + dropped`` counts every event an agent emitted and
sent or gave up on (events still queued when a process is SIGKILLed are not
counted: nobody is left to count them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from protocols import Delivery, Message

from ._agent import Agent, handler
from ._trace import trace_id

__all__ = ["GetTrace", "Observed", "Observer", "ObserverStats", "ObserverTap", "observer_tap", "trace_id"]

log = logging.getLogger("garrison.observer")


class Observed(Message, name="garrison.observer.events", delivery=Delivery.AT_MOST_ONCE):
    """From a watched agent's tap: ``events`` and how many were ``dropped`` since the last batch."""

    agent: str
    events: list[dict[str, Any]]
    dropped: int = 0


class GetTrace(Message, name="garrison.observer.trace"):
    trace: str


class ObserverStats(Message, name="garrison.observer.stats"):
    pass


class ObserverTap:
    """One agent's bounded queue of events and the thread that sends them (see module docstring).

    ``send(events, dropped)`` delivers one batch (raises on failure).
    """

    def __init__(self, agent_id: str, send: Callable[[list[dict[str, Any]], int], None], *, capacity: int = 10_000,
                 batch: int = 500, interval: float = 0.05, clock: Callable[[], float] = time.time) -> None:
        self.agent_id = agent_id
        self._send = send
        self._queue: deque[dict[str, Any]] = deque()
        self._capacity = capacity
        self._batch = batch
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        #: Events given up on and not yet reported to the observer.
        self._dropped = 0
        #: Totals, for status: events emitted, sent, dropped.
        self.emitted = self.sent = self.dropped_total = 0
        self._thread = threading.Thread(target=self._pump, args=(interval,), name=f"garrison-observer-{agent_id}",
                                        daemon=True)
        self._thread.start()

    def emit(self, kind: str, traceparent: str | None, body: dict[str, Any]) -> None:
        """Queue one event; never blocks (a full queue drops it, counted)."""
        event = {"kind": kind, "agent": self.agent_id, "time": self._clock(), "trace": trace_id(traceparent), **body}
        with self._lock:
            self.emitted += 1
            if len(self._queue) >= self._capacity:
                self._dropped += 1
                self.dropped_total += 1
            else:
                self._queue.append(event)

    def _take(self) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            n = min(self._batch, len(self._queue))
            events = [self._queue.popleft() for _ in range(n)]
            dropped, self._dropped = self._dropped, 0
        return events, dropped

    def _pump(self, interval: float) -> None:
        while True:
            closing = self._closing.wait(interval)
            while True:
                events, dropped = self._take()
                if not events and not dropped:
                    break
                try:
                    self._send(events, dropped)
                    self.sent += len(events)
                except Exception as exc:  # noqa: BLE001 - the observer is down or slow: counted, not raised
                    with self._lock:
                        self._dropped += len(events) + dropped
                        self.dropped_total += len(events)
                    log.info("agent %s: %d observer events not delivered: %s", self.agent_id, len(events), exc)
                    break
            if closing:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (one last try), then stop the thread."""
        self._closing.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, int]:
        with self._lock:
            return {"emitted": self.emitted, "sent": self.sent, "dropped": self.dropped_total,
                    "queued": len(self._queue)}


def observer_tap(config: Any, agent_id: str, lookup: Callable[..., Any] | None) -> ObserverTap | None:
    """The tap for an agent whose config names an observer (None: not watched, or no cluster to send on)."""
    if config.observer is None or lookup is None:
        return None
    ref: list[Any] = []

    def send(events: list[dict[str, Any]], dropped: int) -> None:
        if not ref:
            ref.append(lookup(config.observer, sender=agent_id))
        ref[0].tell(Observed(agent=agent_id, events=events, dropped=dropped))

    return ObserverTap(agent_id, send, capacity=config.observer_queue)


class Observer(Agent):
    """Receives watched agents' events and assembles traces (see module docstring); keeps at most ``keep``."""

    def __init__(self, keep: int = 100_000) -> None:
        self.keep = keep

    @handler
    def observed(self, msg: Observed) -> None:
        for event in msg.events:
            n = self.state.increment("seq")
            self.state.put(f"event/{n:012d}", event)
            if event.get("trace"):
                self.state.put(f"trace/{event['trace']}/{n:012d}", n)
        self.state.increment(f"received/{msg.agent}", len(msg.events))
        if msg.dropped:
            self.state.increment(f"dropped/{msg.agent}", msg.dropped)
        self._trim()

    def _trim(self) -> None:
        first = self.state.get("first", 1)
        last = self.state.get("seq", 0)
        while last - first + 1 > self.keep:
            event = self.state.get(f"event/{first:012d}")
            if event is not None:
                self.state.delete(f"event/{first:012d}")
                if event.get("trace"):
                    self.state.delete(f"trace/{event['trace']}/{first:012d}")
                self.state.increment(f"trimmed/{event['agent']}")
            first += 1
        self.state.put("first", first)

    @handler
    def trace(self, msg: GetTrace) -> list[dict[str, Any]]:
        events = [self.state.get(f"event/{n:012d}") for _, n in self.state.scan(f"trace/{msg.trace}/")]
        return sorted((e for e in events if e is not None), key=lambda e: e["time"])

    @handler
    def stats(self, msg: ObserverStats) -> dict[str, Any]:
        out: dict[str, dict[str, int]] = {}
        for what in ("received", "dropped", "trimmed"):
            for key, value in self.state.scan(f"{what}/"):
                out.setdefault(key.split("/", 1)[1], {"received": 0, "dropped": 0, "trimmed": 0})[what] = value
        return out

