"""Packed agents: the option an agent class takes, and which host and lane serve each of its agents.

An agent is a Ray actor of its own by default (the design card's shape).  A class
that says so is *packed* instead: ``System.spawn`` places each of its agents on
a packed host (``_packed.PackedHost``), one Ray actor serving many light
agents, each with its own LMDB state, epoch and host lock, of which only the
recently used are open::

    class Session(Agent):
        packed = True                                   # the defaults below
        # packed = Packing(idle_timeout=30.0, host="sessions", hosts=2)

Where an agent goes is a pure function of its id: host ``garrison-packed-<host>``
(``-<i>`` of ``hosts`` by a hash of the id), and there one of the host's
``LANES`` handling threads (Ray concurrency groups), the same for every
message to that agent, so its messages are handled one at a time in the order
each caller sent them while other agents' messages go on beside them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .exceptions import ConfigError

__all__ = ["LANES", "PACKED_PREFIX", "Packing", "host_name", "lane_of", "packing_of"]

#: Actor names of packed hosts start with this; they are not agents (``_directory.live_ids``).
PACKED_PREFIX = "garrison-packed-"
#: Handling threads of a packed host (each a Ray concurrency group of one thread).
LANES = 16


class Packing(BaseModel):
    """How a packed agent class is served (the class attribute ``packed``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The packed host(s) its agents go to: classes naming the same host share it.
    host: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    #: Spread the agents over this many hosts (``<host>-0`` ... by a hash of the agent id).
    hosts: int = Field(1, ge=1, le=4096)
    #: Agents a host keeps open at most; past it the least recently used are passivated.
    #: Set by the class whose spawn starts the host (a host keeps the capacity it started with).
    capacity: int = Field(500, ge=1)
    #: Seconds without a message (and with nothing left in its outbox) before an agent is passivated.
    idle_timeout: float = Field(60.0, gt=0)


def packing_of(agent_cls: Any) -> Packing | None:
    """The class's packing (``packed = True`` or a :class:`Packing`), or None for an actor of its own."""
    value = getattr(agent_cls, "packed", None)
    if value is None or value is False:
        return None
    if value is True:
        return Packing()
    if isinstance(value, Packing):
        return value
    raise ConfigError(f"{getattr(agent_cls, '__qualname__', agent_cls)}.packed must be True, False or a "
                      f"runtime.Packing, not {value!r}")


def _bucket(agent_id: str, n: int, salt: bytes) -> int:
    """Stable across processes (unlike ``hash``); salted, so the host's and the lane's are independent."""
    return int.from_bytes(hashlib.blake2b(agent_id.encode(), digest_size=8, salt=salt).digest(), "big") % n


def host_name(packing: Packing, agent_id: str) -> str:
    """The actor name of the packed host that serves ``agent_id``."""
    suffix = f"-{_bucket(agent_id, packing.hosts, b'host')}" if packing.hosts > 1 else ""
    return f"{PACKED_PREFIX}{packing.host}{suffix}"


def lane_of(agent_id: str, lanes: int = LANES) -> str:
    """The concurrency group (handling thread) of a packed host that takes ``agent_id``'s messages."""
    return f"lane{_bucket(agent_id, lanes, b'lane')}"
