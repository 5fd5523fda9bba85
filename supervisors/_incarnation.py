"""One child's live incarnation: start it, watch it, stop it, kill it; no decisions.

:class:`Incarnations` does the mechanics of a child's process for its
supervisor, which decides when (restart plans, stops, escalations) and holds
the restart lock around them.  It reads and sets the child's record
(:class:`Child`, shared data on the supervisor's one event loop), reports
each exit to the supervisor's ``on_exit`` and each step as an event.

A *monitor* task per incarnation awaits the child's pending ``watch`` call.
It returns when the child stops gracefully (exit reason ``normal``) and fails
with Ray's actor error when the process dies (``crash``): crash detection
without polling.

Invariants: ``Child.generation`` changes whenever an incarnation is replaced,
stopped or killed on purpose (:meth:`Incarnations.fence`), and a monitor
started for an older generation reports nothing, so one death is reported
once; a stopped or killed incarnation's process is dead (or DEATH_WAIT has
passed) before the call returns; a process that exits is killed through its
handle, so Ray frees its name for the next incarnation.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

import ray
from ray.exceptions import RayActorError

from ._calls import DEATH_WAIT, await_death, awaitable, first_line
from ._child import Child
from ._lifecycle import ChildState
from ._port import Emit
from ._spawn import Spawner
from ._standby import SparePool
from ._strategy import ExitReason
from .exceptions import ChildStartError

__all__ = ["Incarnations"]


class Incarnations:
    """The processes of supervisor ``name``'s children (see module docstring)."""

    def __init__(self, name: str, *, spawner: Spawner, spares: SparePool, emit: Emit,
                 spawn_task: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]], clock: Callable[[], float],
                 on_exit: Callable[[Child, ExitReason, str | None], None]) -> None:
        self.name = name
        self._spawner = spawner
        self._spares = spares
        self._emit = emit
        self._spawn_task = spawn_task
        self._clock = clock
        self._on_exit = on_exit

    async def start(self, child: Child) -> tuple[int, dict[str, Any]]:
        """Spawn a new incarnation (an agent on a spare placed alike when one is ready), record it, watch it.

        Returns its generation and its probe answer; the caller sets the
        child's state.  Raises ChildStartError (the child then STOPPED, with
        its ``last_failure``).
        """
        child.state = ChildState.STARTING
        child.generation += 1
        gen = child.generation
        spare = None
        try:
            if child.spec.is_supervisor:
                handle, info = await self._spawner.spawn_supervisor(child)
            else:
                spare = self._spares.take(child.spec)
                handle, info = await asyncio.to_thread(self._spawner.spawn_agent, child.spec, spare)
        except Exception as exc:
            child.state = ChildState.STOPPED
            child.last_failure = f"start failed: {first_line(exc)}"
            raise ChildStartError(
                f"supervisor {self.name!r}: child {child.id!r} failed to start: {first_line(exc)}",
                supervisor=self.name, child=child.id,
            ) from exc
        child.handle = handle
        child.incarnation = info.get("incarnation")
        child.epoch = info.get("epoch")
        child.pid = info.get("pid")
        child.started_at = self._clock()
        child.watch_ref = handle.watch.remote()
        child.tasks = [self._spawn_task(self._monitor(child, gen))]
        self._emit("started", child.id, details={"incarnation": child.incarnation, "epoch": child.epoch,
                                                 "pid": child.pid, "warm": spare is not None and handle is spare})
        return gen, info

    async def _monitor(self, child: Child, gen: int) -> None:
        try:
            await child.watch_ref
            reason, failure = ExitReason.NORMAL, None
        except asyncio.CancelledError:
            raise
        except RayActorError as exc:
            reason, failure = ExitReason.CRASH, f"process died: {first_line(exc)}"
        except Exception as exc:  # a sub-supervisor that escalated
            reason, failure = ExitReason.CRASH, first_line(exc)
        if child.generation == gen:
            self._on_exit(child, reason, failure)

    def fence(self, child: Child) -> None:
        """Fence off the live incarnation's monitor and prober (see ``Child.generation``)."""
        child.generation += 1
        current = asyncio.current_task()
        for task in child.tasks:
            if task is not current:
                task.cancel()
        child.tasks = []
        child.handle = child.watch_ref = None
        child.pid = None

    def discard(self, child: Child, reason: ExitReason) -> None:
        """Fence an incarnation that exited (``reason``) and make sure its process is gone.

        Stopped gracefully but still up, or dead: either way Ray keeps the name
        taken until the actor is killed through a handle, so a restart could
        not reuse it.
        """
        handle = child.handle
        self.fence(child)
        if handle is not None:
            if reason is ExitReason.NORMAL:
                self._spawn_task(self._kill_after_stop(handle))
            else:
                ray.kill(handle, no_restart=True)

    async def _kill_after_stop(self, handle: Any) -> None:
        """Kill a child that stopped of its own accord once whoever stopped it has its answer.

        ``stop`` is idempotent and runs on the host's one handling thread, so
        this one returns after the first has answered; a restart meanwhile
        waits for the name (``_spawn.NAME_WAIT``).
        """
        try:
            await asyncio.wait_for(awaitable(handle.stop.remote()), DEATH_WAIT)
        except Exception:
            pass  # already dead, or stuck: killed below either way
        ray.kill(handle, no_restart=True)

    async def stop(self, child: Child, why: str) -> None:
        """Graceful stop within the child's shutdown timeout, then a hard kill; waits for the death."""
        handle, watch_ref = child.handle, child.watch_ref
        self.fence(child)
        timeout = None if math.isinf(child.spec.shutdown) else child.spec.shutdown
        graceful = True
        try:
            await asyncio.wait_for(awaitable(handle.stop.remote(why) if child.spec.is_supervisor
                                              else handle.stop.remote()), timeout)
        except (asyncio.TimeoutError, Exception):
            graceful = False
        ray.kill(handle, no_restart=True)
        await await_death(watch_ref)
        child.state = ChildState.STOPPED
        child.last_exit = ExitReason.SHUTDOWN.value
        self._emit("stopped" if graceful else "killed", child.id, why=why, details={"shutdown": child.spec.shutdown})

    async def kill(self, child: Child) -> None:
        """Kill the live incarnation's process at once; waits for the death."""
        handle, watch_ref = child.handle, child.watch_ref
        self.fence(child)
        if handle is not None:
            ray.kill(handle, no_restart=True)
            await await_death(watch_ref)
        self._emit("killed", child.id, why="hard kill")
