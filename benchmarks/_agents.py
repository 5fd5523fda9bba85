"""Agents and messages used by the benchmark scenarios (importable by Ray workers)."""

from __future__ import annotations

import time

from governance import Action, Risk
from protocols import Message
from runtime import Agent, ApprovalDecided, handler
from runtime.queue import QueueWorker


class Tick(Message, name="bench.tick"):
    n: int


class Burst(Message, name="bench.burst"):
    to: str
    start: int
    count: int


class Count(Message, name="bench.count"):
    pass


class Echo(Message, name="bench.echo"):
    payload: str = ""


class Fill(Message, name="bench.fill"):
    start: int
    count: int
    size: int


class Counter(Agent):
    """Counts ticks in its state; answers echoes."""

    @handler
    def tick(self, msg: Tick) -> None:
        self.state.increment("count")

    @handler
    def count(self, msg: Count) -> int:
        return self.state.get("count", 0)

    @handler
    def fill(self, msg: Fill) -> int:
        blob = b"x" * msg.size
        for i in range(msg.start, msg.start + msg.count):
            self.state.put(f"blob/{i:08d}", blob)
        return msg.count

    @handler
    def echo(self, msg: Echo) -> str:
        self.state.increment("echoes")
        return msg.payload


class Emitter(Agent):
    """Sends a burst of ticks to another agent, effectively-once, through its outbox."""

    @handler
    def burst(self, msg: Burst) -> int:
        for n in range(msg.start, msg.start + msg.count):
            self.send(msg.to, Tick(n=n))
        return msg.count


class SlotSink(Agent):
    """Writes one state key per tick, in a ring of ``SLOTS`` keys: state stays flat, transitions do not."""

    SLOTS = 65_536

    @handler
    def tick(self, msg: Tick) -> None:
        self.state.put(f"slot/{msg.n % self.SLOTS:05d}", msg.n)
        self.state.increment("count")

    @handler
    def count(self, msg: Count) -> int:
        return self.state.get("count", 0)


# -- governed actions ----------------------------------------------------------------



class Lookup(Action, name="bench.lookup", capability="crm.read", risk=Risk.LOW, idempotent=True, cost=0.0):
    """A low-risk action: read a customer's record."""

    customer: str
    n: int


def lookup(action: Lookup) -> dict:
    return {"customer": action.customer, "tier": "gold" if action.n % 2 else "silver"}


class ActMany(Message, name="bench.act_many"):
    """Perform ``count`` lookups, through the gateway (``governed``) or by calling the tool directly."""

    count: int
    start: int = 0
    governed: bool = True


class Clerk(Agent):
    tools = {Lookup: lookup}  # noqa: RUF012

    @handler
    async def act_many(self, msg: ActMany) -> int:
        ok = 0
        for n in range(msg.start, msg.start + msg.count):
            action = Lookup(customer=f"c{n}", n=n)
            if msg.governed:
                ok += (await self.act(action)).ok
            else:
                ok += bool(lookup(action))
        return ok


class Pay(Action, name="bench.pay", capability="payments.refund", risk=Risk.HIGH, cost=0.0):
    """A high-risk action: every one waits for a person."""

    order: str


def pay(action: Pay) -> dict:
    return {"paid": action.order}


class Request(Message, name="bench.request"):
    order: str


class Executed(Message, name="bench.executed"):
    approval_id: str


class Cashier(Agent):
    """Asks approval for each ``Request``; executes when the decision arrives, noting the time."""

    tools = {Pay: pay}  # noqa: RUF012

    @handler
    async def request(self, msg: Request) -> str | None:
        return (await self.act(Pay(order=msg.order))).approval_id

    @handler
    async def decided(self, msg: ApprovalDecided) -> None:
        import time

        outcome = await self.act(msg.action(), approval=msg.approval_id)
        self.state.put(f"done/{msg.approval_id}", [outcome.code.value, time.time()])

    @handler
    def executed(self, msg: Executed) -> list | None:
        return self.state.get(f"done/{msg.approval_id}")


class Sleeper(QueueWorker):
    """A queue worker whose item takes ``payload`` seconds of CPU (the autoscale scenario's load)."""

    def work(self, payload: float) -> float:
        end = time.perf_counter() + payload
        while time.perf_counter() < end:
            pass
        return payload
