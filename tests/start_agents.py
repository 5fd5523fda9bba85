"""Agents that fail to start, or reply with what cannot be encoded (importable by Ray's workers)."""

from __future__ import annotations

from protocols import Message
from runtime import Agent, handler


class Poke(Message, name="start.poke"):
    pass


class Oddity(Message, name="start.oddity"):
    key: str


class Explodes(Agent):
    """A constructor that raises on every start."""

    def __init__(self) -> None:
        raise RuntimeError("no config for the explodes agent")

    @handler
    def poke(self, msg: Poke) -> str:
        return "never"


class FailsOnStart(Agent):
    """``on_start`` raises on every start."""

    def on_start(self) -> None:
        raise ValueError("downstream system unreachable")

    @handler
    def poke(self, msg: Poke) -> str:
        return "never"


class Odd(Agent):
    """Replies with an object msgpack cannot encode, after changing its state."""

    @handler
    def oddity(self, msg: Oddity) -> object:
        self.state.put(msg.key, 1)
        return object()

    @handler
    def poke(self, msg: Poke) -> dict:
        return self.state.keys()
