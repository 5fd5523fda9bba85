"""Agents and messages shared by the tests (importable by Ray workers)."""

from __future__ import annotations

import asyncio
import fcntl
import time

from pydantic import BaseModel

from protocols import Delivery, Message, default_registry
from runtime import Agent, handler


class Add(Message, name="test.add"):
    n: int = 1


class Append(Message, name="test.append"):
    item: int


class GetCount(Message, name="test.get_count"):
    pass


class GetItems(Message, name="test.get_items"):
    pass


class Boom(Message, name="test.boom"):
    pass


class Sleep(Message, name="test.sleep"):
    seconds: float


class Fill(Message, name="test.fill", delivery=Delivery.AT_MOST_ONCE):
    start: int
    count: int
    size: int


class Ping(Message, name="test.ping", delivery=Delivery.AT_MOST_ONCE):
    pass


class Unhandled(Message, name="test.unhandled"):
    pass


class CounterSummary(BaseModel):
    count: int
    items: int


class Counter(Agent):
    """Counts, and keeps an append-only list of items (one key per item)."""

    @handler
    def add(self, msg: Add) -> int:
        return self.state.increment("count", msg.n)

    @handler
    def append(self, msg: Append) -> int:
        n = self.state.increment("count")
        self.state.put(f"item/{n:08d}", msg.item)
        return n

    @handler
    async def get(self, msg: GetCount) -> int:
        return self.state.get("count", 0)

    @handler
    def items(self, msg: GetItems) -> list[int]:
        return [v for _, v in self.state.scan("item/")]

    @handler
    def boom(self, msg: Boom) -> None:
        self.state.put("count", -999)
        raise RuntimeError("boom")

    @handler
    async def sleep(self, msg: Sleep) -> float:
        await asyncio.sleep(msg.seconds)
        return msg.seconds

    @handler
    def fill(self, msg: Fill) -> int:
        blob = b"x" * msg.size
        for i in range(msg.start, msg.start + msg.count):
            self.state.put(f"blob/{i:08d}", blob)
        return msg.count

    @handler
    def ping(self, msg: Ping) -> float:
        return time.time()

    def summary(self, state):
        return CounterSummary(count=state.get("count", 0), items=len(state.keys("item/")))


# -- messaging between agents --------------------------------------------------


class Item(Message, name="test.item"):
    n: int


class Emit(Message, name="test.emit"):
    to: str
    start: int
    count: int
    delivery: Delivery | None = None
    #: Send the items without the Emit's deadline (``Agent.send(inherit_deadline=False)``).
    detached: bool = False


class Report(Message, name="test.report"):
    pass


class Sink(Agent):
    """Records every item per sender; counts duplicates and order violations.

    With ``gate`` (a file path), each item waits for a shared ``flock`` on it:
    a test holding the exclusive lock stops the sink from handling items
    without stopping its process, however fast or slow the machine is.
    """

    def __init__(self, delay: float = 0.0, gate: str | None = None) -> None:
        self.delay = delay
        self.gate = None if gate is None else open(gate)  # noqa: SIM115 (held for the agent's life)

    @handler
    def item(self, msg: Item) -> None:
        if self.gate is not None:
            fcntl.flock(self.gate, fcntl.LOCK_SH)  # blocks while the test holds the gate
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        if self.delay:
            time.sleep(self.delay)
        sender = self.context.sender
        key = f"seen/{sender}/{msg.n:08d}"
        if key in self.state:
            self.state.increment("dups")
        self.state.put(key, 1)
        last = self.state.get(f"last/{sender}", -1)
        if msg.n != last + 1:
            self.state.increment("out_of_order")
        self.state.put(f"last/{sender}", msg.n)
        self.state.increment("count")

    @handler
    def report(self, msg: Report) -> dict:
        return {
            "count": self.state.get("count", 0),
            "dups": self.state.get("dups", 0),
            "out_of_order": self.state.get("out_of_order", 0),
        }

    @handler
    def items(self, msg: GetItems) -> list[int]:
        return [int(k.rsplit("/", 1)[1]) for k in self.state.keys("seen/")]


class SinkV2(Sink):
    """Sink's next version (a deploy): the same state and items; its report says which version answered."""

    @handler
    def report(self, msg: Report) -> dict:
        return {**super().report(msg), "v": 2}


class Producer(Agent):
    """Sends ``count`` items numbered from ``start`` to another agent."""

    @handler
    def emit(self, msg: Emit) -> int:
        for n in range(msg.start, msg.start + msg.count):
            self.send(msg.to, Item(n=n), delivery=msg.delivery, inherit_deadline=not msg.detached)
        self.state.increment("emitted", msg.count)
        return msg.count

    @handler
    def report(self, msg: Report) -> dict:
        return {"emitted": self.state.get("emitted", 0)}


# -- deadlines -------------------------------------------------------------------


class Hop(Message, name="test.hop"):
    pass


class Chain(Agent):
    """Waits ``delay`` seconds, then asks ``next`` (inheriting the deadline)."""

    def __init__(self, next: str | None = None, delay: float = 0.0) -> None:
        self.next = next
        self.delay = delay

    @handler
    def hop(self, msg: Hop) -> str:
        time.sleep(self.delay)
        self.state.increment("handled")
        if self.next is None:
            return self.agent_id
        return self.lookup(self.next).ask(Hop())

    @handler
    def report(self, msg: Report) -> dict:
        return {"handled": self.state.get("handled", 0)}


# -- schema evolution ------------------------------------------------------------


class RefundV1(Message, name="test.refund", version=1):
    cents: int


class RefundV2(Message, name="test.refund", version=2):
    amount: int
    currency: str = "EUR"


@default_registry.upcaster("test.refund", from_version=1)
def _refund_v1_to_v2(body: dict) -> dict:
    return {"amount": body["cents"], "currency": "EUR"}


class Billing(Agent):
    """Speaks version 2 of test.refund only."""

    @handler
    def refund(self, msg: RefundV2) -> str:
        self.state.increment("refunded", msg.amount)
        return f"{msg.amount} {msg.currency}"


# -- fencing ----------------------------------------------------------------------


class Linger(Message, name="test.linger", delivery=Delivery.AT_MOST_ONCE):
    """Wait until ``flag`` exists, then ask ``peer`` and write state: a late incarnation's acts."""

    flag: str
    peer: str


class Laggard(Agent):
    """Stands for an incarnation that hangs, is replaced, and wakes up."""

    @handler
    async def linger(self, msg: Linger) -> str:
        import os

        while not os.path.exists(msg.flag):
            await asyncio.sleep(0.01)
        try:
            await self.lookup(msg.peer).ask_async(Add(n=1), timeout=5)
            outcome = "sent"
        except Exception as exc:  # the late message's refusal, recorded by the late write
            outcome = type(exc).__name__
        self.state.put("late", outcome)
        return outcome

    @handler
    def report(self, msg: Report) -> dict:
        return {"late": self.state.get("late"), "count": self.state.get("count", 0)}

    @handler
    def add(self, msg: Add) -> int:
        return self.state.increment("count", msg.n)


class Classify(Message, name="test.classify"):
    ticket: str
    text: str


class Triage(Agent):
    """Records a decision per ticket (``Agent.decide``); a ticket ending in ``!`` fails after deciding."""

    OPTIONS = ("refund", "question", "complaint")

    @handler
    def classify(self, msg: Classify) -> str:
        choice = "refund" if "refund" in msg.text else "complaint" if "angry" in msg.text else "question"
        self.decide(choice, options=self.OPTIONS, rationale=f"keywords in ticket {msg.ticket}",
                    context={"ticket": msg.ticket, "text": msg.text}, keep_context=msg.ticket.startswith("keep"))
        self.state.increment("decided")
        if msg.ticket.endswith("!"):
            raise ValueError("failed after deciding")
        return choice
