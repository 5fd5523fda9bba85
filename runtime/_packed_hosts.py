"""A driver's packed hosts: started on first use, agents placed on them, retired, ended when empty.

``System`` hands a packed class's spawn here (``_packing``): the agent's host
is found by name, or started (a detached actor, restarted by Ray for ever,
like an agent's own host), and the agent is placed on it (its spec recorded,
the agent opened, ``on_start`` run).  The ref returned reaches it through a
``PackedHandle``; so does every later lookup, through the directory.

``stop`` retires a packed agent (its host lives on); ``shutdown`` ends the
hosts this driver started or used that serve no agent any more; ``stats`` reads
every packed host of the namespace (``garrison hosts``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from ._boundary import from_ray, start_failed
from ._packed import RemotePackedHost
from ._packed_handle import PackedHandle
from ._packing import LANES, PACKED_PREFIX, Packing, host_name
from ._ref import AgentRef
from ._spec import HostSpec
from .exceptions import AgentAlreadyRunning, AgentStartError, GarrisonError

__all__ = ["PackedHosts"]

log = logging.getLogger("garrison.system")


class PackedHosts:
    """The packed hosts one ``System`` uses (see module docstring)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._hosts: dict[str, Any] = {}  # actor name -> handle

    @staticmethod
    def serves(ref: AgentRef) -> bool:
        """Whether ``ref``'s agent is a packed one (it has no actor of its own to end)."""
        return isinstance(ref.route.handle, PackedHandle)

    def host(self, name: str, *, capacity: int, checkpoint_dir: str, ray_options: dict[str, Any] | None = None,
             timeout: float = 60.0) -> Any:
        """The packed host ``name``, started if no actor of that name is live."""
        handle = self._hosts.get(name)
        if handle is not None:
            return handle
        roster = str(Path(checkpoint_dir) / "packed" / name)
        options = {"name": name, "namespace": self.namespace, "lifetime": "detached", "max_restarts": -1,
                   "max_task_retries": 0, "num_cpus": 0, "get_if_exists": True, **(ray_options or {})}
        handle = RemotePackedHost.options(**options).remote(name, self.namespace, roster, capacity)
        try:
            ray.get(handle.stats.remote(), timeout=timeout)
        except (GetTimeoutError, RayError) as exc:
            raise AgentStartError(f"packed host {name!r} did not start: {exc}", agent_id=name) from exc
        self._hosts[name] = handle
        return handle

    def spawn(self, spec: HostSpec, packing: Packing, *, sender: str, timeout: float = 60.0,
              ray_options: dict[str, Any] | None = None) -> AgentRef:
        """Place ``spec``'s agent on its packed host and return a ref to it (as ``System.spawn``)."""
        agent_id = spec.agent_id
        try:
            ray.get_actor(agent_id, namespace=self.namespace)
        except ValueError:
            pass
        else:
            raise AgentAlreadyRunning(f"agent {agent_id!r} is live (an actor of its own)", agent_id=agent_id)
        host = self.host(host_name(packing, agent_id), capacity=packing.capacity, checkpoint_dir=spec.checkpoint_dir,
                         ray_options=ray_options, timeout=timeout)
        handle = PackedHandle(host, agent_id, LANES)
        try:
            ray.get(handle.place.remote(spec), timeout=timeout)
        except GetTimeoutError as exc:
            raise AgentStartError(f"agent {agent_id!r} was not ready within {timeout}s", agent_id=agent_id) from exc
        except RayError as exc:
            error = from_ray(exc, agent_id, what="start")
            raise (error if isinstance(error, AgentAlreadyRunning) else start_failed(agent_id, error)) from exc
        return AgentRef(agent_id, handle, namespace=self.namespace, sender=sender)

    def stats(self, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every live packed host of the namespace with its ``PackedHost.stats`` (agents placed, open and
        passive, capacity, activations, passivations, pid, threads), by name; one that does not answer
        within ``timeout`` (waited for each in turn) is listed as ``{"host", "error"}``."""
        names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["namespace"] == self.namespace and a["name"].startswith(PACKED_PREFIX))
        calls = {}
        for name in names:  # asked all at once, then read: one slow host does not hold up the others' calls
            try:
                calls[name] = ray.get_actor(name, namespace=self.namespace).stats.remote()
            except ValueError:  # ended since it was listed
                continue
        out = []
        for name, call in calls.items():
            try:
                out.append(ray.get(call, timeout=timeout))
            except (GetTimeoutError, RayError) as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                out.append({"host": name, "error": f"{type(exc).__name__}: {first_line}"})
        return out

    def stop(self, ref: AgentRef, *, timeout: float = 30.0) -> dict[str, Any] | None:
        """Retire a packed agent: a graceful stop if it is open, then no longer served (its state stays)."""
        try:
            return ray.get(ref.route.handle.stop.remote(), timeout=timeout)
        except (RayError, GarrisonError) as exc:
            log.warning("packed agent %s did not stop gracefully: %s", ref.agent_id, exc)
            return None

    def shutdown(self) -> None:
        """End the packed hosts this driver used that serve no agent any more (others keep theirs)."""
        for name, handle in list(self._hosts.items()):
            try:
                if ray.get(handle.stats.remote(), timeout=30)["placed"] == 0:
                    ray.get(handle.close.remote(), timeout=60)
                    ray.kill(handle, no_restart=True)
            except (RayError, GarrisonError) as exc:
                log.warning("packed host %s: %s", name, exc)
            self._hosts.pop(name, None)
