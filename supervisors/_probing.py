"""Hang detection: liveness probes with a deadline, judged by :func:`judge_probe`.

:class:`Prober` is the supervisor's collaborator for this.  One prober task
per child incarnation (only with a :class:`ProbePolicy`); probes are answered
by the host off its handling thread, so a busy agent still answers and only
a handler past ``handler_limit`` or missed probes make it suspect.  An
answer that says the agent is degraded (its checkpoint store fails) gets the
policy's ``on_degraded``, once per episode (:func:`judge_degraded`); one that
counts new breaker trips gets a ``breaker_tripped`` alert (:func:`judge_trips`).

Probes go out on a fixed cadence, one every ``interval`` whether or not the
previous one has answered, each with its own ``timeout``; they are judged in
the order they were sent.  So a process stuck from time ``t`` is suspect by
``t + missed_limit * interval + timeout`` (the K-th probe sent after ``t``
times out), not after K sequential waits.

What a suspect or degraded child gets is asked of the supervisor through its
:class:`SupervisorPort`: ``kill_and_exit`` (a restart, exit reason ``hung`` or
``degraded``) or ``quarantine_child``; events go out through ``emit``.

Invariants: a prober of a replaced incarnation (``generation`` changed)
reports nothing; at most ``ceil(timeout / interval) + 1`` probes are
outstanding; when the prober ends, its pending probes are cancelled; a child
is acted on (restarted or quarantined) at most once per prober.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ray.exceptions import RayActorError

from ._calls import awaitable
from ._child import Child
from ._health import DegradedAction, HangAction, ProbePolicy, Verdict, judge_degraded, judge_probe, judge_trips
from ._lifecycle import ChildState
from ._port import SupervisorPort
from ._strategy import ExitReason

__all__ = ["Prober"]


class Prober:
    """Probers and what a suspect or degraded child gets (see module docstring).

    ``sleep`` paces the probes (``asyncio.sleep``; a test passes one that only yields).
    """

    def __init__(self, port: SupervisorPort, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._port = port
        self._sleep = sleep

    def start(self, child: Child, gen: int) -> None:
        """Probe incarnation ``gen`` of ``child`` (if its spec has a probe policy); the task joins ``child.tasks``."""
        if child.spec.probe is not None:
            child.tasks.append(self._port.spawn_task(self._probe_loop(child, gen)))

    async def _probe_loop(self, child: Child, gen: int) -> None:
        policy = child.spec.probe
        assert policy is not None
        sent: asyncio.Queue[asyncio.Task[dict[str, Any] | None] | None] = asyncio.Queue()
        launcher = asyncio.ensure_future(self._launch_probes(child, gen, policy, sent))
        missed = 0
        trips = 0  # this incarnation's breaker trips already reported
        known: float | None = None  # ``since`` of the degraded episode already acted on
        degraded: tuple[DegradedAction, str] | None = None  # restart or quarantine it, and why
        try:
            while True:
                probe = await sent.get()
                if probe is None:  # the launcher saw the incarnation replaced or not running
                    return
                answer = await probe
                if child.generation != gen:
                    return
                missed, verdict = judge_probe(policy, missed, answer)
                if verdict is Verdict.SUSPECT:
                    break
                trips, tripped = judge_trips(trips, answer)
                if tripped is not None:
                    self._trip_event(child, tripped)
                judged = judge_degraded(policy, known, answer)
                known = judged.known
                if judged.cleared and policy.on_degraded is not DegradedAction.IGNORE:
                    self._port.emit("recovered", child.id, why="its checkpoint store works again")
                if judged.action is None or judged.action is DegradedAction.IGNORE:
                    continue
                assert answer is not None
                why = self._degraded_event(child, answer["degraded"], judged.action)
                if judged.action is not DegradedAction.NOTIFY:
                    degraded = judged.action, why
                    break
        finally:
            launcher.cancel()
            while not sent.empty():
                pending = sent.get_nowait()
                if pending is not None:
                    pending.cancel()
        if degraded is not None:
            await self._act_on_degraded(child, *degraded)
            return
        running = None if answer is None else answer.get("handler_running_for")
        why = (f"{missed} probes in a row unanswered within {policy.timeout}s" if answer is None else
               f"a handler has been running for {running:.2f}s (limit {policy.handler_limit}s)")
        await self._suspect(child, why)

    async def _launch_probes(self, child: Child, gen: int, policy: ProbePolicy,
                             sent: asyncio.Queue[asyncio.Task[dict[str, Any] | None] | None]) -> None:
        """Send a probe every ``interval`` (an absolute schedule: no drift), until the incarnation changes."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += policy.interval
            await self._sleep(max(0.0, due - loop.time()))
            if child.generation != gen or child.state is not ChildState.RUNNING:
                sent.put_nowait(None)
                return
            sent.put_nowait(asyncio.ensure_future(self._probe_once(child, policy)))

    @staticmethod
    async def _probe_once(child: Child, policy: ProbePolicy) -> dict[str, Any] | None:
        """One probe: the answer, or None if none came within ``timeout`` (or the process is dead)."""
        try:
            return await asyncio.wait_for(awaitable(child.handle.probe.remote()), policy.timeout)
        except (asyncio.TimeoutError, RayActorError):
            return None

    async def _suspect(self, child: Child, why: str) -> None:
        policy = child.spec.probe
        assert policy is not None
        self._port.emit("suspect", child.id, why=why, details={"action": policy.action.value})
        if policy.action is HangAction.QUARANTINE:
            await self._port.quarantine_child(child, f"hung: {why}")
            return
        await self._port.kill_and_exit(child, ExitReason.HUNG, f"hung: {why}")

    def _trip_event(self, child: Child, trips: dict[str, Any]) -> None:
        """One ``breaker_tripped`` alert for the trips new since the last probe (see ``judge_trips``)."""
        named = trips["recent"]
        why = "; ".join(f"{t['breaker']} breaker opened: {t['why']}" for t in named)
        if trips["new"] > len(named):
            why += f" (and {trips['new'] - len(named)} earlier trips)"
        if trips.get("on_trip") == "halt":
            why += "; the agent pulled its kill switch"
        self._port.emit("breaker_tripped", child.id, who="breaker", why=why, details=trips)

    def _degraded_event(self, child: Child, info: dict[str, Any], action: DegradedAction) -> str:
        """The ``degraded`` alert (once per episode); returns the why."""
        why = (f"checkpoint store failing ({info.get('reason')}, {info.get('errno') or 'no errno'}) "
               f"for {info.get('attempts')} attempt(s): {info.get('last_error')}")
        self._port.emit("degraded", child.id, why=why, details={**info, "action": action.value})
        return why

    async def _act_on_degraded(self, child: Child, action: DegradedAction, why: str) -> None:
        if action is DegradedAction.QUARANTINE:
            await self._port.quarantine_child(child, f"degraded: {why}")
            return
        await self._port.kill_and_exit(child, ExitReason.DEGRADED, f"degraded: {why}")
