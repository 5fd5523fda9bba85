"""Warm standby: spare hosts kept started, handed an agent on its restart.

Part of :class:`supervisors._supervisor.SupervisorActor` (a mixin).  A spare
is an agent host with no agent (``System.spawn_spare``); ``_spawn_agent``
pops one and has it ``adopt`` the child.  Invariants: at most
``flags.standby`` spares are ready or starting; a spare started while the
supervisor is not RUNNING is killed, never kept; stopping or escalating kills
the spares.

Placement: spares start with the ``ray_options`` of the supervisor's first
agent child (a pool's template), and adopt only a child whose options are
the same (:func:`placement_key`), so an agent pinned to a node, a resource or
a placement group never lands on a process outside it; other children
restart cold, where their own options place them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from ._calls import awaitable, first_line
from ._lifecycle import SupervisorState
from ._spec import ChildSpec

__all__ = ["Standby", "placement_key", "spare_placement"]


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


class Standby:
    """The spares (see module docstring)."""

    def _take_spare(self, spec: ChildSpec) -> Any:
        """A ready spare placed as ``spec`` asks, or None (a cold start)."""
        if not self._spares or placement_key(spec.ray_options) != self._spare_key:
            return None
        spare = self._spares.pop(0)
        self._replenish_spares()
        return spare

    async def spares(self) -> list[dict[str, Any]]:
        """The warm spares ready now (state ``spare``, pid)."""
        return list(await asyncio.gather(*(awaitable(s.probe.remote()) for s in list(self._spares))))

    def _replenish_spares(self) -> None:
        """Start spares in the background until ``flags.standby`` are ready or starting."""
        while self.state is SupervisorState.RUNNING and \
                len(self._spares) + self._spares_starting < self.spec.flags.standby:
            self._spares_starting += 1
            self._spawn_task(self._start_spare())

    async def _start_spare(self) -> None:
        try:
            spare = await asyncio.to_thread(self._system.spawn_spare, ray_options=self._spare_options)
            await spare.describe.remote()  # its process is up and has loaded the runtime
        except Exception as exc:
            self._emit("spare_failed", None, why=first_line(exc))
            return
        finally:
            self._spares_starting -= 1
        if self.state is SupervisorState.RUNNING:
            self._spares.append(spare)
        else:
            ray.kill(spare, no_restart=True)

    def _kill_spares(self) -> None:
        spares, self._spares = self._spares, []
        for spare in spares:
            ray.kill(spare, no_restart=True)
