"""Agents and messages used by the benchmark scenarios (importable by Ray workers)."""

from __future__ import annotations

from protocols import Message
from runtime import Agent, handler


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
