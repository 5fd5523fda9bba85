"""What a route holds for a packed agent: its host's actor handle, with the agent's id bound in.

Every caller of an agent host (``AgentRef``, ``AgentAdmin``, the outbox's
``Dispatcher``, the committer's at-most-once sends) calls
``handle.<method>.remote(*args)`` on whatever the agent directory resolved.
For a packed agent (``_packing``) that is a :class:`PackedHandle`: the same
calls reach the packed host (``_packed.PackedHost``) with the agent's id put
first, so none of those callers knows whether the agent has a process of its
own.

* ``deliver``, ``deliver_batch`` and ``place`` go to the agent's lane (one
  handling thread of the host, always the same for the agent): Ray runs a
  caller's calls to one lane in the order they were made.
* Everything else (status, checkpoint, the kill switch, dead letters, ...)
  goes to the host's ``call``, on its control threads, as ``AgentHost``'s
  methods of the same names.

Invariant: a handle names one agent on one host; it pickles as those two and
the host's lane count, so it can be passed to other agents like a Ray handle.
"""

from __future__ import annotations

from typing import Any

from ._packing import lane_of

__all__ = ["LANE_METHODS", "PackedHandle", "PackedMethod"]

#: Methods that go to the agent's lane (its messages, in order); the rest go to ``call``.
LANE_METHODS = frozenset({"deliver", "deliver_batch", "place"})


class PackedHandle:
    """A packed agent's host, as an actor handle of the agent's own (see module docstring)."""

    def __init__(self, host: Any, agent_id: str, lanes: int) -> None:
        self.host = host  # the packed host's Ray actor handle
        self.agent_id = agent_id
        self.lanes = lanes
        self.lane = lane_of(agent_id, lanes)

    def __getattr__(self, name: str) -> PackedMethod:
        if name.startswith("_"):  # pickle's and copy's probes, and anything private: not a host method
            raise AttributeError(name)
        return PackedMethod(self, name, {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedHandle, (self.host, self.agent_id, self.lanes))

    def __repr__(self) -> str:
        return f"PackedHandle({self.agent_id!r}, {self.lane})"


class PackedMethod:
    """One host method with the agent's id bound: ``.remote(*args)`` and ``.options(**ray_options)``."""

    def __init__(self, handle: PackedHandle, name: str, options: dict[str, Any]) -> None:
        self.handle = handle
        self.name = name
        self.ray_options = options

    def options(self, **options: Any) -> PackedMethod:
        return PackedMethod(self.handle, self.name, {**self.ray_options, **options})

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        h = self.handle
        if self.name in LANE_METHODS:
            method = getattr(h.host, self.name).options(concurrency_group=h.lane, **self.ray_options)
            return method.remote(h.agent_id, *args, **kwargs)
        return h.host.call.options(**self.ray_options).remote(h.agent_id, self.name, list(args), kwargs)
