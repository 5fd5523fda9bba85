"""Hang detection: liveness probes with a deadline, judged by :func:`judge_probe`.

Part of :class:`supervisors._supervisor.SupervisorActor` (a mixin).  One
prober task per child incarnation (only with a :class:`ProbePolicy`); probes
are answered by the host off its handling thread, so a busy agent still
answers and only a handler past ``handler_limit`` or missed probes make it
suspect.  Invariant: a prober of a replaced incarnation (``generation``
changed) reports nothing.
"""

from __future__ import annotations

import asyncio

from ray.exceptions import RayActorError

from ._calls import awaitable
from ._child import Child
from ._health import HangAction, Verdict, judge_probe
from ._lifecycle import ChildState
from ._strategy import ExitReason

__all__ = ["Probing"]


class Probing:
    """Probers and what a suspect child gets (see module docstring)."""

    def _start_prober(self, child: Child, gen: int) -> None:
        if child.spec.probe is not None:
            child.tasks.append(self._spawn_task(self._probe_loop(child, gen)))

    async def _probe_loop(self, child: Child, gen: int) -> None:
        policy = child.spec.probe
        assert policy is not None
        missed = 0
        while True:
            await asyncio.sleep(policy.interval)
            if child.generation != gen or child.state is not ChildState.RUNNING:
                return
            try:
                answer = await asyncio.wait_for(awaitable(child.handle.probe.remote()), policy.timeout)
            except (asyncio.TimeoutError, RayActorError):
                answer = None
            if child.generation != gen:
                return
            missed, verdict = judge_probe(policy, missed, answer)
            if verdict is Verdict.SUSPECT:
                running = None if answer is None else answer.get("handler_running_for")
                why = (f"{missed} probes in a row unanswered within {policy.timeout}s" if answer is None else
                       f"a handler has been running for {running:.2f}s (limit {policy.handler_limit}s)")
                await self._suspect(child, why)
                return

    async def _suspect(self, child: Child, why: str) -> None:
        policy = child.spec.probe
        assert policy is not None
        self._emit("suspect", child.id, why=why, details={"action": policy.action.value})
        if policy.action is HangAction.QUARANTINE:
            await self._quarantine_child(child, f"hung: {why}")
            self._emit("quarantined", child.id, why=why)
            return
        await self._kill(child)
        self._exited(child, ExitReason.HUNG, f"hung: {why}")
