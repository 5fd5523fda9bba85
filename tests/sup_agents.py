"""Agents and messages for the supervisor tests (importable by Ray workers)."""

from __future__ import annotations

import time
import uuid

from protocols import Delivery, Message
from runtime import Agent, handler
from supervisors import BackoffPolicy


class Spin(Message, name="suptest.spin", delivery=Delivery.AT_MOST_ONCE):
    """Loop for ``seconds`` (forever if None), never yielding: a hung handler."""

    seconds: float | None = None


class Work(Message, name="suptest.work", delivery=Delivery.AT_MOST_ONCE):
    """Legitimate long work: sleeps ``seconds`` then counts it."""

    seconds: float


class Bump(Message, name="suptest.bump"):
    n: int = 1


class Read(Message, name="suptest.read"):
    pass


class Worker(Agent):
    """A counter that can also work for a long time, or hang."""

    @handler
    def bump(self, msg: Bump) -> int:
        return self.state.increment("count", msg.n)

    @handler
    def read(self, msg: Read) -> int:
        return self.state.get("count", 0)

    @handler
    def work(self, msg: Work) -> float:
        time.sleep(msg.seconds)
        self.state.increment("worked")
        return msg.seconds

    @handler
    def spin(self, msg: Spin) -> None:
        end = None if msg.seconds is None else time.monotonic() + msg.seconds
        while end is None or time.monotonic() < end:
            time.sleep(0.01)


class BrokenAtStart(Agent):
    """Its constructor raises: a child that can never start."""

    def __init__(self) -> None:
        raise RuntimeError("misconfigured on purpose")


class BrokenIfNamedBad(Agent):
    """Its ``on_start`` raises when its id says ``bad``: a pool child that cannot start beside ones that can."""

    def on_start(self) -> None:
        if "bad" in self.agent_id:
            raise RuntimeError("misconfigured on purpose")


class SlowStop(Agent):
    """``on_stop`` takes ``delay`` seconds (longer than a short shutdown timeout forces a hard kill)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def on_stop(self) -> None:
        time.sleep(self.delay)

    @handler
    def read(self, msg: Read) -> int:
        return self.state.get("count", 0)


class FlakyStart(Agent):
    """Its constructor raises while the file ``marker`` exists: a restart that fails until fixed."""

    def __init__(self, marker: str) -> None:
        import os

        if os.path.exists(marker):
            raise RuntimeError(f"marker {marker} present")

    @handler
    def bump(self, msg: Bump) -> int:
        return self.state.increment("count", msg.n)

    @handler
    def read(self, msg: Read) -> int:
        return self.state.get("count", 0)


# -- helpers shared by the supervisor tests ---------------------------------------

#: No waiting between restarts: the tests are about which restarts, not when.
FAST = BackoffPolicy(initial=0.0, max_delay=0.0, jitter=0.0)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
