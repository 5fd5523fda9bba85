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
from runtime import Agent, ApprovalDecided, ApprovalQueue, handler


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


class Write(Action, name="govtest.write", capability="crm.note", risk=Risk.LOW, idempotent=True, cost=0.0):
    """A reply the agent drafts: what the semantic breaker watches."""

    text: str
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


def write(action: Write) -> str:
    _perform(action.log, f"write {action.text}", None)
    return action.text


def wipe(action: Wipe) -> None:
    _perform(action.log, "wipe", None)


def refund_reconciled(action: Refund, key: str):
    """Asks the (pretend) payments system: the log says whether the call got through."""
    done = any(line.startswith(f"refund {action.order} ") for line in Path(action.log).read_text().splitlines())
    return Result({"refunded": action.amount, "reconciled": True}) if done else NOT_DONE


class Act(Message, name="govtest.act"):
    """Ask the agent to perform these actions, in order; the reply is their outcomes.

    An action's ``approval`` (an approval request's id) resumes it under that approval.
    """

    actions: list[dict]


class ActThenFail(Message, name="govtest.act_then_fail"):
    """Perform these actions, then raise: the handler fails after its effects happened."""

    actions: list[dict]


class Decisions(Message, name="govtest.decisions"):
    """The outcomes of the actions this agent resumed on ``ApprovalDecided``, by approval id."""


ACTIONS = {"refund": Refund, "ship": Ship, "audit": Audit, "wipe": Wipe, "write": Write}


class Clerk(Agent):
    """Performs what ``Act`` asks; on ``ApprovalDecided`` resumes the action (``auto_resume``) or notes it."""

    tools = {Refund: refund, Ship: ship, Audit: audit, Wipe: wipe, Write: write}

    def __init__(self, auto_resume: bool = True) -> None:
        self.auto_resume = auto_resume

    @handler
    async def act_all(self, msg: Act) -> list[dict]:
        out = []
        for spec in msg.actions:
            action = ACTIONS[spec["kind"]](**{k: v for k, v in spec.items() if k not in ("kind", "approval")})
            outcome = await self.act(action, approval=spec.get("approval"), context="test ticket")
            out.append(outcome.model_dump(mode="json"))
        return out

    @handler
    async def act_then_fail(self, msg: ActThenFail) -> None:
        for spec in msg.actions:
            await self.act(ACTIONS[spec["kind"]](**{k: v for k, v in spec.items() if k != "kind"}))
        raise RuntimeError("the handler failed after acting")

    @handler
    async def decided(self, msg: ApprovalDecided) -> None:
        """The pattern: the decision resumes the work; the gateway checks it with the queue."""
        if self.auto_resume:
            outcome = (await self.act(msg.action(), approval=msg.approval_id)).model_dump(mode="json")
        else:
            outcome = {"code": "noted", "state": msg.state}
        self.state.put(f"decided/{msg.approval_id}", outcome)
        self.state.increment("decisions_handled")

    @handler
    def decisions(self, msg: Decisions) -> dict:
        return {"handled": self.state.get("decisions_handled", 0),
                "outcomes": {k.split("/", 1)[1]: v for k, v in self.state.scan("decided/")}}


def off_script(text: str) -> float:
    """A deterministic drift scorer: how far a drafted reply is from what this shop says."""
    return 1.0 if "refund everyone" in text else 0.0


class WatchedClerk(Clerk):
    drift_scorer = staticmethod(off_script)


class ReconcilingClerk(Clerk):
    tools = {**Clerk.tools, Refund: Tool(refund, reconcile=refund_reconciled)}


class Forge(Message, name="govtest.forge"):
    """Write ``request`` into the queue's state as it is: an approval nobody gave."""

    request: dict


class ForgeableQueue(ApprovalQueue):
    """An approval queue whose state a test can forge (what an attacker with write access could do)."""

    @handler
    def forge(self, msg: Forge) -> None:
        self.state.put(f"req/{msg.request['id']}", msg.request)
