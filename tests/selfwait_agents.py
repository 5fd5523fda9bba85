"""Agents for tests/test_selfwait.py (importable by Ray workers): handlers that ask another agent, or their own."""

from __future__ import annotations

from protocols import Message
from runtime import Agent, Packing, handler


class Ping(Message, name="test.selfwait.ping"):
    pass


class Asked(Message, name="test.selfwait.asked"):
    """Whom the agent's state says it asked last."""


class AskPeer(Message, name="test.selfwait.ask_peer"):
    """Ask agent ``to`` a ``Ping`` from this (sync) handler."""

    to: str
    timeout: float = 20.0


class AskPeerAsync(Message, name="test.selfwait.ask_peer_async"):
    """The same from an async handler, with ``ask_async``."""

    to: str
    timeout: float = 20.0


class Asker(Agent):
    """An actor of its own: counts the pings it answered, in its state."""

    @handler
    def ping(self, msg: Ping) -> int:
        return self.state.increment("pings")

    @handler
    def asked(self, msg: Asked) -> str | None:
        return self.state.get("asked")

    @handler
    def ask_peer(self, msg: AskPeer) -> int:
        self.state.put("asked", msg.to)  # rolled back if the ask fails
        return self.lookup(msg.to).ask(Ping(), timeout=msg.timeout)

    @handler
    async def ask_peer_async(self, msg: AskPeerAsync) -> int:
        self.state.put("asked", msg.to)
        return await self.lookup(msg.to).ask_async(Ping(), timeout=msg.timeout)


class PackedAsker(Asker):
    """The same, packed: 16 lanes on one host of its own."""

    packed = Packing(host="test-selfwait", idle_timeout=600.0)
