"""Packed agents and messages for tests/test_packed.py (importable by Ray workers).

Each class names a host of its own, so tests of one kind never share a packed host with another's.
"""

from __future__ import annotations

from protocols import Message
from runtime import Agent, Packing, handler
from runtime._packing import PACKED_PREFIX


def end_packed_hosts(prefix: str) -> None:
    """End every packed host whose name starts with ``garrison-packed-<prefix>`` (what a test left)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"{PACKED_PREFIX}{prefix}"):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            except ValueError:  # ended meanwhile
                pass


class Note(Message, name="test.packed.note"):
    """Append ``item`` to the agent's list."""

    item: int


class Notes(Message, name="test.packed.notes"):
    pass


class Whoami(Message, name="test.packed.whoami"):
    pass


class Relay(Message, name="test.packed.relay"):
    """Send ``Note(item)`` to agent ``to`` through the outbox."""

    to: str
    item: int


class Session(Agent):
    """A light agent: a list of notes (one key per note) and a count, all in its own LMDB state."""

    packed = Packing(host="test-session", idle_timeout=600.0)

    @handler
    def note(self, msg: Note) -> int:
        n = self.state.increment("count")
        self.state.put(f"note/{n:08d}", msg.item)
        return n

    @handler
    def notes(self, msg: Notes) -> list[int]:
        return [v for _, v in self.state.scan("note/")]

    @handler
    async def whoami(self, msg: Whoami) -> str:
        return self.agent_id

    @handler
    def relay(self, msg: Relay) -> None:
        self.send(msg.to, Note(item=msg.item))


class SmallSession(Session):
    """At most 4 open at once: the others passivated, least recently used first."""

    packed = Packing(host="test-small", capacity=4, idle_timeout=600.0)


class IdleSession(Session):
    """Passivated after half a second without a message."""

    packed = Packing(host="test-idle", idle_timeout=0.5)


class CrashSession(Session):
    """For the SIGKILL test: a host of its own."""

    packed = Packing(host="test-crash", idle_timeout=600.0)


class FencedSession(Session):
    """For the fencing tests: two hosts, placed explicitly."""

    packed = Packing(host="test-fence-a", idle_timeout=600.0)
