"""Agents, actions and tools for the governed-actions tests (importable by Ray workers and subprocesses).

Every tool appends one line per call to the file its action names (``log``),
so a test counts calls from the outside, across processes and crashes.  A
tool whose action says ``block`` writes its line, then waits on a ``flock``
of that file held by the test: the call is in flight until the test lets it
go or SIGKILLs the process.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from governance import NOT_DONE, Action, Result, Risk, Tool
from protocols import Message
from runtime import Agent, handler


class OutOfStock(Exception):
    """A business outcome, not a failure."""


class Refund(Action, name="govtest.refund", capability="payments.refund", idempotent=False,
             risk=lambda a: Risk.HIGH if a.amount > 100 else Risk.LOW, business_errors=(OutOfStock,),
             cost=lambda a: float(a.amount) / 100):
    order: str
    amount: int
    log: str
    block: str | None = None
    fail: str | None = None  # "business" | "error"


class Ship(Action, name="govtest.ship", capability="shipping.create", risk=Risk.LOW, idempotent=True, cost=1.0):
    order: str
    log: str
    block: str | None = None


class Audit(Action, name="govtest.audit", capability="crm.note", risk=Risk.MEDIUM, cost=0.0):
    note: str
    log: str


class Wipe(Action, name="govtest.wipe", capability="db.admin", risk=Risk.PROHIBITED, cost=0.0):
    log: str


def _perform(log: str, line: str, block: str | None) -> None:
    with open(log, "a") as f:
        f.write(line + "\n")
    if block:
        with open(block) as gate:
            fcntl.flock(gate, fcntl.LOCK_SH)  # waits while the test holds the gate
            fcntl.flock(gate, fcntl.LOCK_UN)


def refund(action: Refund) -> dict:
    _perform(action.log, f"refund {action.order} {action.amount}", action.block)
    if action.fail == "business":
        raise OutOfStock(action.order)
    if action.fail == "error":
        raise ConnectionError("payments service unreachable")
    return {"refunded": action.amount}


async def ship(action: Ship, idempotency_key: str) -> Result:
    _perform(action.log, f"ship {action.order} {idempotency_key}", action.block)
    return Result({"shipment": action.order}, cost=0.5)


def audit(action: Audit) -> str:
    _perform(action.log, f"audit {action.note}", None)
    return "noted"


def wipe(action: Wipe) -> None:
    _perform(action.log, "wipe", None)


def refund_reconciled(action: Refund, key: str):
    """Asks the (pretend) payments system: the log says whether the call got through."""
    done = any(line.startswith(f"refund {action.order} ") for line in Path(action.log).read_text().splitlines())
    return Result({"refunded": action.amount, "reconciled": True}) if done else NOT_DONE


class Act(Message, name="govtest.act"):
    """Ask the agent to perform these actions, in order; the reply is their outcomes."""

    actions: list[dict]


ACTIONS = {"refund": Refund, "ship": Ship, "audit": Audit, "wipe": Wipe}


class Clerk(Agent):
    tools = {Refund: refund, Ship: ship, Audit: audit, Wipe: wipe}

    @handler
    async def act_all(self, msg: Act) -> list[dict]:
        out = []
        for spec in msg.actions:
            action = ACTIONS[spec["kind"]](**{k: v for k, v in spec.items() if k != "kind"})
            outcome = await self.act(action)
            out.append(outcome.model_dump(mode="json"))
        return out


class ReconcilingClerk(Clerk):
    tools = {**Clerk.tools, Refund: Tool(refund, reconcile=refund_reconciled)}
