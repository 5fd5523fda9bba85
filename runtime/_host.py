"""The Ray actor that hosts one agent: a thin shell around :class:`AgentCore`.

Ray gives the process, the name and the restarts (``max_restarts=-1``: Ray
re-runs the constructor after a crash, which restores the state by itself).
Control calls (status, checkpoint) run in their own concurrency group, on a
separate event loop thread, so they answer while a handler is busy.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import ray

from ._core import AgentCore, HostSpec
from ._ref import AgentRef
from .exceptions import AgentNotFound

__all__ = ["CONTROL", "WATCH", "AgentHost", "RemoteAgentHost", "lookup_agent"]

CONTROL = "control"
WATCH = "watch"


def lookup_agent(agent_id: str, *, namespace: str, sender: str) -> AgentRef:
    try:
        handle = ray.get_actor(agent_id, namespace=namespace)
    except ValueError as exc:
        raise AgentNotFound(f"no live agent {agent_id!r} in namespace {namespace!r}", agent_id=agent_id) from exc
    return AgentRef(agent_id, handle, namespace=namespace, sender=sender)


class AgentHost:
    """One agent per actor.  The Ray dashboard shows its name (the agent id) and repr."""

    def __init__(self, spec: HostSpec, namespace: str) -> None:
        self._spec = spec
        self.core = AgentCore(spec)
        self.core.agent._lookup = functools.partial(lookup_agent, namespace=namespace, sender=spec.agent_id)

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if core is None:
            return f"Agent({self._spec.agent_id}, {self._spec.agent_cls.__qualname__}, starting)"
        return (
            f"Agent({core.agent_id}, {self._spec.agent_cls.__qualname__}, "
            f"incarnation={core.incarnation}, state={core.lifecycle.name})"
        )

    async def deliver(self, raw: bytes) -> bytes:
        return await self.core.deliver(raw)

    async def ready(self) -> dict[str, Any]:
        await self.core.ensure_started()
        return self.core.status()

    async def stop(self) -> dict[str, Any]:
        return await self.core.stop()

    @ray.method(concurrency_group=CONTROL)
    async def status(self) -> dict[str, Any]:
        return self.core.status()

    @ray.method(concurrency_group=CONTROL)
    async def probe(self) -> dict[str, Any]:
        """Liveness, answered off the handlers' event loop: a busy agent still answers."""
        return self.core.probe()

    @ray.method(concurrency_group=WATCH)
    async def watch(self) -> dict[str, Any]:
        """Pending until the agent stops; fails with Ray's actor error if the process dies.

        A monitor holds one of these per agent: crash detection without polling.
        """
        await asyncio.wrap_future(self.core.stopped)
        return self.core.status()

    @ray.method(concurrency_group=CONTROL)
    async def checkpoint(self, force: bool = True) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.core.checkpoint, force=force)

    @ray.method(concurrency_group=CONTROL)
    async def restore_history(self) -> list[dict[str, Any]]:
        return self.core.restore_history()

    @ray.method(concurrency_group=CONTROL)
    async def transitions(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return self.core.store.transitions(after_seq, limit)

    @ray.method(concurrency_group=CONTROL)
    async def metrics(self) -> str:
        return self.core.metrics.text()


RemoteAgentHost = ray.remote(concurrency_groups={CONTROL: 2, WATCH: 1000})(AgentHost)
