"""Subscriber agents of the topic tests (importable by Ray workers)."""

from __future__ import annotations

import os
import time

from protocols import Message
from runtime import Agent, handler
from runtime.topics import Published


class Received(Message, name="test.topic.received"):
    pass


class Reader(Agent):
    """Stores every delivery it handles, in handling order: ``[topic, seq, payload]`` per key.

    With ``gate`` (a file path), a restarted incarnation waits in ``on_restore`` until that file
    exists: a test holds the subscriber down for as long as it needs, then lets it come back.
    """

    def __init__(self, gate: str | None = None) -> None:
        self.gate = gate

    def on_restore(self, report) -> None:
        end = time.time() + 120
        while self.gate is not None and not os.path.exists(self.gate) and time.time() < end:
            time.sleep(0.05)

    @handler
    def on_published(self, msg: Published) -> None:
        n = self.state.increment("n")
        self.state.put(f"got/{n:08d}", [msg.topic, msg.seq, msg.payload])

    @handler
    def received(self, msg: Received) -> list[list]:
        return [value for _, value in self.state.scan("got/")]
