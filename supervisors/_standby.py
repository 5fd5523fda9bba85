"""Warm standby: spare hosts kept started, handed an agent on its restart.

Part of :class:`supervisors._supervisor.SupervisorActor` (a mixin).  A spare
is an agent host with no agent (``System.spawn_spare``); ``_spawn_agent``
pops one and has it ``adopt`` the child.  Invariants: at most
``flags.standby`` spares are ready or starting; a spare started while the
supervisor is not RUNNING is killed, never kept; stopping or escalating kills
the spares.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from ._calls import awaitable, first_line
from ._lifecycle import SupervisorState

__all__ = ["Standby"]


class Standby:
    """The spares (see module docstring)."""

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
            spare = await asyncio.to_thread(self._system.spawn_spare)
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
