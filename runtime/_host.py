"""The Ray actor that hosts one agent: a thin shell around :class:`AgentCore`.

Ray gives the process, the name and the restarts (``max_restarts=-1``: Ray
re-runs the constructor after a crash, which restores the state by itself).

It is a threaded (not async) actor: a plain method call is Ray's cheapest
path.  Concurrency groups keep concerns apart:

``default`` (1 thread)  messages, batches, start, stop: one at a time, in order.
``control`` (2 threads) status, probe, checkpoint, introspection: they answer
                        while a handler is busy or stuck.
``watch``   (16 threads) ``watch`` calls that stay pending until the agent stops.
"""

from __future__ import annotations

import functools
import gc
import time
from typing import Any

import ray

from ._core import AgentCore
from ._ref import AgentRef
from ._spec import HostSpec
from .exceptions import AgentNotFound

__all__ = ["CONTROL", "WATCH", "AgentHost", "RemoteAgentHost", "lookup_agent"]

CONTROL = "control"
WATCH = "watch"


def lookup_agent(agent_id: str, *, namespace: str, sender: str | None) -> AgentRef:
    try:
        handle = ray.get_actor(agent_id, namespace=namespace)
    except ValueError as exc:
        raise AgentNotFound(f"no live agent {agent_id!r} in namespace {namespace!r}", agent_id=agent_id) from exc
    return AgentRef(agent_id, handle, namespace=namespace, sender=sender)


def _resolve(agent_id: str, *, namespace: str) -> Any:
    return ray.get_actor(agent_id, namespace=namespace)


class AgentHost:
    """One agent per actor.  The Ray dashboard shows its name (the agent id) and repr."""

    def __init__(self, spec: HostSpec, namespace: str) -> None:
        # This process hosts one agent.  Handling allocates many short-lived
        # objects and few cycles: collect the young generation less often,
        # and keep what start-up built out of every collection.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        self._spec = spec
        self.core = AgentCore(spec, resolve=functools.partial(_resolve, namespace=namespace))
        self.core.agent._lookup = functools.partial(lookup_agent, namespace=namespace, sender=spec.agent_id)
        # Start now, not at the first message: after a crash Ray re-runs this
        # constructor and nobody else calls, yet the outbox must resume.
        self.core.ensure_started()

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if core is None:
            return f"Agent({self._spec.agent_id}, {self._spec.agent_cls.__qualname__}, starting)"
        return (
            f"Agent({core.agent_id}, {self._spec.agent_cls.__qualname__}, "
            f"incarnation={core.incarnation}, state={core.lifecycle.name})"
        )

    def deliver(self, raw: bytes) -> bytes:
        return self.core.deliver(raw)

    def deliver_batch(self, blob: bytes) -> bytes:
        return self.core.deliver_batch(blob)

    def ready(self) -> dict[str, Any]:
        self.core.ensure_started()
        return self.core.status()

    def stop(self) -> dict[str, Any]:
        return self.core.stop()

    def replay_dead_letters(self, ids: list[str] | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        return self.core.replay_dead_letters(ids, reason)

    @ray.method(concurrency_group=CONTROL)
    def status(self) -> dict[str, Any]:
        return self.core.status()

    @ray.method(concurrency_group=CONTROL)
    def describe(self) -> str:
        """The repr the dashboard and Ray's log prefixes use."""
        return repr(self)

    @ray.method(concurrency_group=CONTROL)
    def probe(self) -> dict[str, Any]:
        """Liveness, answered off the handling thread: a busy agent still answers."""
        return self.core.probe()

    @ray.method(concurrency_group=WATCH)
    def watch(self) -> dict[str, Any]:
        """Pending until the agent stops; fails with Ray's actor error if the process dies.

        A monitor holds one of these per agent: crash detection without polling.
        """
        self.core.stopped.result()
        return self.core.status()

    @ray.method(concurrency_group=CONTROL)
    def checkpoint(self, force: bool = True) -> dict[str, Any] | None:
        return self.core.checkpoint(force=force)

    @ray.method(concurrency_group=CONTROL)
    def handling_times(self) -> dict[str, Any]:
        """Recent handling durations (monotonic start, seconds) and this process's monotonic now."""
        return {"now": time.monotonic(), "recent": list(self.core.recent_handling)}

    @ray.method(concurrency_group=CONTROL)
    def restore_history(self) -> list[dict[str, Any]]:
        return self.core.restore_history()

    @ray.method(concurrency_group=CONTROL)
    def transitions(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return self.core.store.transitions(after_seq, limit)

    @ray.method(concurrency_group=CONTROL)
    def dead_letters(self, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.core.dead_letters(reason, limit)

    @ray.method(concurrency_group=CONTROL)
    def record_dead_letters(self, reason: str, raws: list[bytes], why: str, uncounted: int = 0) -> int:
        """Letters a sender gave up delivering here (a driver's held-tell overflow), recorded as dead letters."""
        return self.core.record_dead_letters(reason, raws, why, uncounted)

    @ray.method(concurrency_group=CONTROL)
    def metrics(self) -> str:
        return self.core.metrics.text()

    # -- supervisors: quarantine and kill switch (see supervisors/) ---------------------

    @ray.method(concurrency_group=CONTROL)
    def quarantine(self, why: str) -> dict[str, Any]:
        return self.core.quarantine(why)

    @ray.method(concurrency_group=CONTROL)
    def release(self) -> dict[str, Any]:
        return self.core.release()

    @ray.method(concurrency_group=CONTROL)
    def halt(self, who: str, why: str) -> dict[str, Any]:
        return self.core.halt(who, why)

    @ray.method(concurrency_group=CONTROL)
    def unhalt(self, who: str) -> dict[str, Any]:
        return self.core.unhalt(who)


RemoteAgentHost = ray.remote(concurrency_groups={CONTROL: 2, WATCH: 16})(AgentHost)
