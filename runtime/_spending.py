"""An agent's spending: its own budget and, when it draws from one, a fleet budget.

:class:`Spending` reserves a call's estimate before the call (the agent's own
:class:`governance.Budget`, then the fleet's, an agent asked by
``AgentConfig.fleet_budget``), and settles the actual cost, or releases the
reservation, after.  Either refusing is the call's answer: ``budget_exceeded``
(a fleet budget that does not answer refuses too: a call is never made
without its reservation).  The agent's own budget is kept in its ledger
(``s/budget``), written with the intent and the outcome.  A fleet settle that
does not get through is logged; the fleet releases that reservation after its
``stale_after``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from governance import Budget, BudgetPolicy
from protocols import GarrisonError

from ._fleet_budget import Release, Reserve, Settle
from ._ledger import Ledger

__all__ = ["Spending"]

log = logging.getLogger("garrison.gateway")


class Spending:
    """Budgets one agent's calls draw on (see module docstring)."""

    def __init__(self, *, agent_id: str, policy: BudgetPolicy | None, fleet: str | None, ledger: Ledger,
                 lookup: Callable[[str], Any] | None, now: float) -> None:
        self.agent_id = agent_id
        snapshot = ledger.state("budget")
        self._own = (None if policy is None else
                     Budget(policy, now) if snapshot is None else Budget.restore(policy, snapshot))
        self._fleet = fleet
        self._lookup = lookup

    async def reserve(self, key: str, estimate: float, now: float) -> tuple[str, bool] | None:
        """None: reserved; else ``(why not, retryable)``."""
        if self._own is not None:
            answer = self._own.reserve(key, estimate, now)
            if not answer.granted:
                why = (f"estimate {estimate} does not fit this agent's budget: {answer.remaining} left of "
                       f"{answer.limit} ({answer.reason.value})")
                return why, answer.reason.value != "exceeds_limit"
        if self._fleet is None:
            return None
        try:
            if self._lookup is None:
                raise GarrisonError("no cluster to reach the fleet budget")
            answer = await self._lookup(self._fleet).ask_async(Reserve(key=key, estimate=estimate), timeout=30)
        except GarrisonError as exc:
            self._release_own(key, now)
            return f"fleet budget {self._fleet} did not answer ({type(exc).__name__}: {exc})", True
        if not answer["granted"]:
            self._release_own(key, now)
            why = (f"estimate {estimate} does not fit fleet budget {self._fleet}: {answer['remaining']} left "
                   f"of {answer['limit']} ({answer['reason']})")
            return why, answer["reason"] != "exceeds_limit"
        return None

    def _release_own(self, key: str, now: float) -> None:
        if self._own is not None:
            self._own.release(key, now)

    async def settle(self, key: str, actual: float, now: float) -> None:
        if self._own is not None:
            self._own.settle(key, actual, now)
        await self._tell_fleet(Settle(key=key, actual=actual))

    async def release(self, key: str, now: float) -> None:
        self._release_own(key, now)
        await self._tell_fleet(Release(key=key))

    async def _tell_fleet(self, msg: Any) -> None:
        if self._fleet is None or self._lookup is None:
            return
        try:
            await self._lookup(self._fleet).ask_async(msg, timeout=30)
        except GarrisonError as exc:
            log.warning("agent %s: fleet budget %s did not take %s: %s", self.agent_id, self._fleet,
                        type(msg).__name__, exc)

    def state(self) -> list[tuple[str, Any]]:
        return [] if self._own is None else [("budget", self._own.snapshot())]

    def status(self, now: float) -> dict[str, Any]:
        own = None
        if self._own is not None:
            u = self._own.usage(now)
            own = {"limit": u.limit, "spent": u.spent, "reserved": u.reserved, "remaining": u.remaining}
        return {"budget": own, "fleet_budget": self._fleet}
