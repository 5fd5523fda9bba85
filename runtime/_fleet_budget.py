"""A fleet budget: one cost budget several agents draw from, held by a Garrison agent.

:class:`FleetBudget` keeps a :class:`governance.Budget` in its working
state.  Its handler runs one message at a time, so each reservation is atomic
however many agents ask at once: a call is admitted only if its estimate fits
what is left (``spent + reserved + estimate <= limit``).  Overspend is bounded
as :mod:`governance._budget` says: by the sum of the overruns (actual minus
estimate) of settled calls; with no overruns the limit is never exceeded.

An agent's gateway (``_gateway``, ``AgentConfig.fleet_budget``) asks
:class:`Reserve` before the call (under the call's idempotency key, so a
retried ask gets the same answer) and :class:`Settle` (or :class:`Release`)
after.  A reservation whose agent died before settling is released after
``stale_after`` seconds (and a late settle is still charged).

State: ``budget`` (the Budget's snapshot, msgpack-friendly), rewritten by
every message that changes it, in the same commit as the handling.
"""

from __future__ import annotations

import time
from typing import Any

from governance import Budget, BudgetPolicy
from protocols import Message

from ._agent import Agent, handler

__all__ = ["FleetBudget", "FleetUsage", "Release", "Reserve", "Settle"]


class Reserve(Message, name="garrison.budget.reserve"):
    key: str
    estimate: float


class Settle(Message, name="garrison.budget.settle"):
    key: str
    actual: float


class Release(Message, name="garrison.budget.release"):
    key: str


class FleetUsage(Message, name="garrison.budget.usage"):
    """Ask a FleetBudget for its limit, spent, reserved, remaining and overrun."""


class FleetBudget(Agent):
    """Holds one budget for a fleet of agents (see module docstring)."""

    def __init__(self, limit: float, period: float | None = None, stale_after: float = 3600.0) -> None:
        self.policy = BudgetPolicy(limit=limit, period=period)
        self.stale_after = stale_after

    def _budget(self, now: float) -> Budget:
        snapshot = self.state.get("budget")
        budget = Budget(self.policy, now) if snapshot is None else Budget.restore(self.policy, snapshot)
        budget.expire_reservations(now, self.stale_after)
        return budget

    @handler
    def reserve(self, msg: Reserve) -> dict[str, Any]:
        now = time.time()
        budget = self._budget(now)
        answer = budget.reserve(msg.key, msg.estimate, now)
        self.state.put("budget", budget.snapshot())
        if answer.granted:
            return {"granted": True}
        return {"granted": False, "reason": answer.reason.value, "remaining": answer.remaining,
                "limit": answer.limit}

    @handler
    def settle(self, msg: Settle) -> dict[str, Any]:
        now = time.time()
        budget = self._budget(now)
        settled = budget.settle(msg.key, msg.actual, now)
        self.state.put("budget", budget.snapshot())
        return {"overrun": settled.overrun, "duplicate": settled.duplicate}

    @handler
    def release(self, msg: Release) -> None:
        now = time.time()
        budget = self._budget(now)
        budget.release(msg.key, now)
        self.state.put("budget", budget.snapshot())

    @handler
    def usage(self, msg: FleetUsage) -> dict[str, Any]:
        u = self._budget(time.time()).usage(time.time())
        return {"limit": u.limit, "spent": u.spent, "reserved": u.reserved, "remaining": u.remaining,
                "overrun": u.overrun}
