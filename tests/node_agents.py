"""Agents of the node-loss scenario (importable by Ray workers on every node of its cluster)."""

from __future__ import annotations

import os

from protocols import Delivery, Message
from runtime import Agent, handler

from .agents import Append, Item, Report, Sink


class Where(Message, name="test.where", delivery=Delivery.AT_MOST_ONCE):
    """Which Ray node and process host the agent now (read only, never remembered)."""


def _where() -> dict:
    import ray

    return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


class Relay(Agent):
    """Records each item once (counting duplicates) and forwards it to ``to`` through its outbox."""

    def __init__(self, to: str) -> None:
        self.to = to

    @handler
    def append(self, msg: Append) -> int:
        key = f"item/{msg.item:08d}"
        if key in self.state:
            self.state.increment("dups")
        self.state.put(key, 1)
        self.send(self.to, Item(n=msg.item))  # leaves only if this handler's changes commit
        return self.state.increment("count")

    @handler
    def report(self, msg: Report) -> dict:
        return {
            "count": self.state.get("count", 0),
            "dups": self.state.get("dups", 0),
            "items": [int(k.rsplit("/", 1)[1]) for k in self.state.keys("item/")],
        }

    @handler
    def where(self, msg: Where) -> dict:
        return _where()


class SeenBy(Message, name="test.seen_by"):
    """The items a sink has recorded, per sender."""


class PlacedSink(Sink):
    """``tests.agents.Sink`` that also says where it runs and what it saw from whom."""

    @handler
    def seen_by(self, msg: SeenBy) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        for key in self.state.keys("seen/"):  # seen/<sender>/<n>
            _, sender, n = key.split("/")
            seen.setdefault(sender, []).append(int(n))
        return seen

    @handler
    def where(self, msg: Where) -> dict:
        return _where()
