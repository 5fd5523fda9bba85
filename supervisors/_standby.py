"""Warm standby: spare hosts kept started, handed an agent on its restart.

:class:`SparePool` is the supervisor's collaborator that owns the spares.  A
spare is an agent host with no agent (``System.spawn_spare``); the supervisor
takes one (:meth:`SparePool.take`) when it starts an agent child, and the
spawn has it ``adopt`` the child (``_spawn``).  The pool asks the supervisor
only what its :class:`SupervisorPort` offers: its state, a task, an event.

Invariants: at most ``flags.standby`` spares are ready or starting; a spare
that is ready while the supervisor is not RUNNING is killed, never kept; no
spare is started while the supervisor is not RUNNING.  The supervisor kills
the spares (:meth:`SparePool.kill_all`) when it stops or escalates.

Placement: spares start with the ``ray_options`` of the supervisor's first
agent child (a pool's template), and adopt only a child whose options are
the same (:func:`placement_key`), so an agent pinned to a node, a resource or
a placement group never lands on a process outside it; other children
restart cold, where their own options place them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ray

from ._calls import awaitable, first_line
from ._lifecycle import SupervisorState
from ._port import SupervisorPort
from ._spec import ChildSpec

__all__ = ["SparePool", "placement_key", "spare_placement"]


def placement_key(options: dict[str, Any]) -> str:
    """A comparable form of ``ray_options``: equal for options that place a process alike.

    Scheduling strategies (Ray's classes define no equality) compare by class
    and attributes, so two built separately for the same node are the same.
    """
    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return sorted((str(k), norm(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if hasattr(value, "__dict__") and not isinstance(value, type):
            return [type(value).__qualname__, norm(vars(value))]
        return repr(value)

    return repr(norm(options))


def spare_placement(children: list[ChildSpec]) -> dict[str, Any]:
    """The ``ray_options`` spares start with: the first agent child's (none without one)."""
    return next((dict(c.ray_options) for c in children if not c.is_supervisor), {})


def kill_actor(handle: Any) -> None:
    """Kill a Ray actor for good (the default way a pool disposes of a spare)."""
    ray.kill(handle, no_restart=True)


class SparePool:
    """The warm spares of one supervisor (see module docstring).

    ``spawn(ray_options=...)`` starts a spare and returns its handle; it blocks,
    so it runs in a thread.  ``kill(handle)`` disposes of one.
    """

    def __init__(self, port: SupervisorPort, *, target: int, options: dict[str, Any],
                 spawn: Callable[..., Any], kill: Callable[[Any], None] = kill_actor) -> None:
        self._port = port
        #: How many spares to keep ready or starting (``flags.standby``).
        self.target = target
        self._options = options
        self._key = placement_key(options)
        self._spawn = spawn
        self._kill = kill
        #: Spares ready to adopt an agent, oldest first, and how many are being started.
        self._ready: list[Any] = []
        self._starting = 0

    @property
    def ready(self) -> int:
        """How many spares are ready now."""
        return len(self._ready)

    def take(self, spec: ChildSpec) -> Any:
        """A ready spare placed as ``spec`` asks, or None (a cold start); a replacement starts in the background."""
        if not self._ready or placement_key(spec.ray_options) != self._key:
            return None
        spare = self._ready.pop(0)
        self.replenish()
        return spare

    async def describe(self) -> list[dict[str, Any]]:
        """The warm spares ready now, as their probes answer (state ``spare``, pid)."""
        return list(await asyncio.gather(*(awaitable(s.probe.remote()) for s in list(self._ready))))

    def replenish(self) -> None:
        """Start spares in the background until ``target`` are ready or starting (only while RUNNING)."""
        while self._port.state() is SupervisorState.RUNNING and len(self._ready) + self._starting < self.target:
            self._starting += 1
            self._port.spawn_task(self._start_one())

    def kill_all(self) -> None:
        """Kill every ready spare (one still starting is killed when it is ready, the supervisor no longer RUNNING)."""
        spares, self._ready = self._ready, []
        for spare in spares:
            self._kill(spare)

    async def _start_one(self) -> None:
        try:
            spare = await asyncio.to_thread(self._spawn, ray_options=self._options)
            await spare.describe.remote()  # its process is up and has loaded the runtime
        except Exception as exc:
            self._port.emit("spare_failed", None, why=first_line(exc))
            return
        finally:
            self._starting -= 1
        if self._port.state() is SupervisorState.RUNNING:
            self._ready.append(spare)
        else:
            self._kill(spare)
