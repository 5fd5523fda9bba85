"""Spawning one incarnation of a child: an agent (warm, on a spare, or cold) or a nested supervisor.

No supervision state here: the supervisor records what a spawn returns.
Children are spawned with ``max_restarts=0``, so only the supervisor restarts
them.  A restart may find the previous incarnation's name still taken for a
moment after its death was reported: a spawn retries for NAME_WAIT seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from runtime import AgentAlreadyRunning, System

from ._child import Child
from ._notifier import Notifier
from ._spec import ChildSpec

__all__ = ["NAME_WAIT", "Spawner"]

log = logging.getLogger("garrison.supervisor")

#: Seconds a spawn keeps retrying while the previous incarnation's name is still taken.
NAME_WAIT = 5.0


class Spawner:
    """Starts the processes of supervisor ``name``'s children (see module docstring)."""

    def __init__(self, name: str, system: System, *, namespace: str, data_dir: str, checkpoint_dir: str,
                 notifiers: tuple[Notifier, ...], supervisor_class: Any) -> None:
        self.name = name
        self._system = system
        self._namespace = namespace
        self._data_dir, self._checkpoint_dir = data_dir, checkpoint_dir
        self._notifiers = notifiers
        #: The Ray actor class of a nested supervisor (``RemoteSupervisor``).
        self._supervisor_class = supervisor_class

    def spawn_spare(self, *, ray_options: dict[str, Any]) -> Any:
        """Blocking: start a warm-standby host (see ``_standby``)."""
        return self._system.spawn_spare(ray_options=ray_options)

    def spawn_agent(self, spec: ChildSpec, spare: Any = None) -> tuple[Any, dict[str, Any]]:
        """Blocking (runs in a thread): hand the agent to ``spare``, or spawn it (no Ray restarts); wait until ready."""
        if spare is not None:
            host_spec = self._system.host_spec(spec.agent, spec.id, config=spec.config, init=spec.init,
                                               replaces=spec.replaces)
            try:
                self._system.adopt(spare, host_spec)
                return spare, ray.get(spare.probe.remote(), timeout=30)
            except Exception as exc:  # a dead or failing spare: fall back to a cold start
                log.warning("supervisor %s: spare could not adopt %s (%s); cold start", self.name, spec.id, exc)
                ray.kill(spare, no_restart=True)
        deadline = time.monotonic() + NAME_WAIT
        while True:
            try:
                self._system.spawn(spec.agent, spec.id, config=spec.config, init=spec.init, detached=False,
                                   ray_options={**spec.ray_options, "max_restarts": 0}, replaces=spec.replaces)
                break
            except AgentAlreadyRunning:
                # The previous incarnation's name is freed a moment after its death is reported.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        handle = ray.get_actor(spec.id, namespace=self._namespace)
        return handle, ray.get(handle.probe.remote(), timeout=30)

    async def spawn_supervisor(self, child: Child) -> tuple[Any, dict[str, Any]]:
        """Start ``child``'s nested supervisor (not a root) and its children; killed again if its start fails."""
        sub = child.spec.supervisor
        assert sub is not None
        deadline = time.monotonic() + NAME_WAIT
        while True:
            try:
                handle = self._supervisor_class.options(
                    name=sub.id, namespace=self._namespace, lifetime=None, max_restarts=0,
                    max_task_retries=0, num_cpus=0,
                ).remote(sub, data_dir=self._data_dir, checkpoint_dir=self._checkpoint_dir,
                         namespace=self._namespace, notifiers=self._notifiers, root=False)
                break
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        try:
            await handle.start.remote()
        except Exception:
            ray.kill(handle, no_restart=True)
            raise
        info = await handle.probe.remote()
        return handle, {"incarnation": child.restarts + 1, "pid": info["pid"]}
