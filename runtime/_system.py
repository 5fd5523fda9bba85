"""The entry point for driver scripts: start or join Ray, spawn and find agents, shut down.

::

    from runtime import System

    with System(data_dir="./garrison-data", create=True) as system:   # embedded local Ray
        counter = system.spawn(Counter, "counter-1")
        counter.tell(Add(n=2))
        assert counter.ask(Get(), timeout=5) == 2

    # Another driver, same cluster:
    with System(address="auto") as system:
        counter = system.lookup("counter-1")
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from . import _directory
from ._agent import Agent
from ._config import AgentConfig, validated
from ._directory import SPARE_PREFIX
from ._host import RemoteAgentHost, lookup_agent
from ._metrics import merge_expositions
from ._boundary import from_ray, start_failed
from ._packed_hosts import PackedHosts
from ._packing import packing_of
from ._ref import AgentRef
from ._spec import NODE_PLACEHOLDER, HostSpec, check_agent_id, check_writable_dir, per_node, per_node_root
from .exceptions import (
    AgentAlreadyRunning,
    AgentNotFound,
    AgentStartError,
    ClusterUnavailable,
    ConfigError,
    DataDirectoryError,
    GarrisonError,
)

__all__ = ["NAMESPACE", "System"]

NAMESPACE = "garrison"
log = logging.getLogger("garrison.system")


class System:
    """A driver's view of a Garrison deployment (see module docstring).

    ``address=None`` starts an embedded local Ray (or reuses the one this
    process already started); ``"auto"`` or ``"ray://host:port"`` joins a
    cluster.  ``data_dir`` is each node's local state directory;
    ``checkpoint_dir`` (default ``<data_dir>/checkpoints``) must be shared by
    every node that may host an agent.

    Where nodes share a filesystem, give each its own local state with the
    ``{node}`` placeholder (``data_dir="/shared/garrison/{node}"``): each host
    expands it to its Ray node id, so an agent moved to another node restores
    from the checkpoint store instead of reopening the old node's files.  The
    driver checks (and with ``create`` makes) only the part above the
    placeholder; ``checkpoint_dir`` must then be given, and hold no placeholder.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        address: str | None = None,
        namespace: str = NAMESPACE,
        create: bool = False,
        ray_init: dict[str, Any] | None = None,
        interventions: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.namespace = namespace
        #: Intervention hooks (``"module:function"``) put first in every agent this System spawns.
        self.interventions = tuple(interventions)
        self.data_dir = self._prepare_data_dir(data_dir, create) if data_dir else None
        if checkpoint_dir is not None and per_node(checkpoint_dir):
            raise ConfigError(f"checkpoint directory {checkpoint_dir} holds {NODE_PLACEHOLDER}: it must be one "
                              "directory shared by every node, or a moved agent finds no checkpoint")
        if checkpoint_dir is None and self.data_dir is not None and per_node(self.data_dir):
            raise ConfigError(f"data directory {self.data_dir} is per node ({NODE_PLACEHOLDER}): give a "
                              "checkpoint_dir shared by every node (the default would be per node too)")
        if checkpoint_dir is None and self.data_dir is not None:
            checkpoint_dir = self.data_dir / "checkpoints"
            create_ck = True
        else:
            create_ck = create
        self.checkpoint_dir = self._prepare_dir(checkpoint_dir, "checkpoint directory", create_ck) if checkpoint_dir else None
        self.sender = f"driver:{uuid.uuid4().hex[:12]}"
        self._owns_ray = False
        #: The Ray dashboard's URL when this System started Ray with it (``ray_init={"include_dashboard": True}``).
        self.dashboard_url: str | None = None
        if not ray.is_initialized():
            kwargs = embedded_ray_init(address, **{"namespace": namespace, **(ray_init or {})})
            if address is not None or os.environ.get("RAY_ADDRESS"):  # joining a cluster
                _use_cluster_token()
            try:
                context = ray.init(address=address, **kwargs)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError, and a bare
                # Exception when the local node does not register within Ray's fixed 30 s (an overloaded
                # machine): every one means "no cluster", and only Garrison errors leave the boundary.
                raise ClusterUnavailable(
                    f"cannot {'start' if address is None else f'join the Ray cluster at {address!r}'}: {exc}"
                    + ("" if address is None else _join_hint(exc)), address=address) from exc
            self._owns_ray = True
            url = getattr(context, "dashboard_url", None)
            self.dashboard_url = f"http://{url}" if url and "://" not in url else url or None
        self._spawned: dict[str, AgentRef] = {}
        self._packed = PackedHosts(namespace)  # packed classes' agents: many to a host (``_packed``)

    @classmethod
    def _prepare_data_dir(cls, path: str | os.PathLike[str], create: bool) -> Path:
        """The data directory, checked; for a per-node one, only the part above ``{node}``."""
        if not per_node(path):
            return cls._prepare_dir(path, "data directory", create)
        p = Path(path).expanduser().resolve()
        cls._prepare_dir(per_node_root(p), "data directory (the part above {node})", create)
        return p

    @staticmethod
    def _prepare_dir(path: str | os.PathLike[str], what: str, create: bool) -> Path:
        p = Path(path).expanduser().resolve()
        if create:
            try:
                p.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataDirectoryError(f"cannot create {what} {p}: {exc}", path=str(p)) from exc
        return check_writable_dir(p, what)

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def spawn(
        self,
        agent_cls: type[Agent],
        agent_id: str,
        *,
        config: AgentConfig | dict[str, Any] | None = None,
        init: dict[str, Any] | None = None,
        detached: bool = True,
        timeout: float = 60.0,
        ray_options: dict[str, Any] | None = None,
        replaces: tuple[str, ...] = (),
    ) -> AgentRef:
        """Start ``agent_cls`` as agent ``agent_id`` and wait until it is ready.

        An id whose state exists (local or in the checkpoint store) resumes
        it.  Raises AgentAlreadyRunning if the id is live, AgentStartError if
        the constructor, restore or ``on_start`` failed (local state written by
        another class than ``agent_cls`` or one of ``replaces``, ``module:QualName``
        each, among them).
        """
        spec = self.host_spec(agent_cls, agent_id, config=config, init=init, replaces=replaces)
        packing = packing_of(agent_cls)
        if packing is not None:  # one of many agents of a packed host, not an actor of its own
            ref = self._packed.spawn(spec, packing, sender=self.sender, timeout=timeout, ray_options=ray_options)
            self._spawned[agent_id] = ref
            return ref
        options = self._host_options(agent_id, detached=detached, max_restarts=-1, ray_options=ray_options)
        try:
            handle = RemoteAgentHost.options(**options).remote(spec, self.namespace)
        except ValueError as exc:  # Ray: the name is taken
            raise AgentAlreadyRunning(f"agent {agent_id!r} is already live", agent_id=agent_id) from exc
        return self._await_ready(handle, handle.ready.remote(), agent_id, timeout)

    def host_spec(
        self,
        agent_cls: type[Agent],
        agent_id: str,
        *,
        config: AgentConfig | dict[str, Any] | None = None,
        init: dict[str, Any] | None = None,
        replaces: tuple[str, ...] = (),
    ) -> HostSpec:
        """What a host needs to (re)build agent ``agent_id``; checked here, before anything starts."""
        if self.data_dir is None or self.checkpoint_dir is None:
            raise ConfigError("this System was made without a data_dir; it can look agents up but not spawn them")
        if not (isinstance(agent_cls, type) and issubclass(agent_cls, Agent)):
            raise ConfigError(f"{agent_cls!r} is not a subclass of runtime.Agent")
        check_agent_id(agent_id)
        cfg: AgentConfig = validated(AgentConfig, config)  # type: ignore[assignment]
        if self.interventions:
            cfg = cfg.model_copy(update={"interventions": (*self.interventions, *cfg.interventions)})
        return HostSpec(
            agent_id=agent_id,
            agent_cls=agent_cls,
            data_dir=str(self.data_dir),
            checkpoint_dir=str(self.checkpoint_dir),
            config=cfg,
            init=dict(init or {}),
            replaces=tuple(replaces),
        )

    def spawn_spare(self, *, ray_options: dict[str, Any] | None = None) -> Any:
        """Start a warm-standby host (a process that hosts nothing yet); returns its actor handle.

        ``adopt`` hands it an agent.  Its name starts with ``SPARE_PREFIX``, so
        it is never listed as an agent.
        """
        options = self._host_options(f"{SPARE_PREFIX}{uuid.uuid4().hex[:12]}", detached=False, max_restarts=0,
                                     ray_options=ray_options)
        return RemoteAgentHost.options(**options).remote(None, self.namespace)

    def _host_options(self, name: str, *, detached: bool, max_restarts: int,
                      ray_options: dict[str, Any] | None) -> dict[str, Any]:
        """Ray actor options of a host: named in this namespace, no task retries, no CPU reserved."""
        return {
            "name": name,
            "namespace": self.namespace,
            "lifetime": "detached" if detached else None,
            "max_restarts": max_restarts,
            "max_task_retries": 0,
            "num_cpus": 0,
            **(ray_options or {}),
        }

    def adopt(self, spare: Any, spec: HostSpec, *, timeout: float = 60.0) -> AgentRef:
        """Have ``spare`` take over ``spec.agent_id``: restore its state, serve, register as its host."""
        return self._await_ready(spare, spare.adopt.remote(spec), spec.agent_id, timeout)

    def _await_ready(self, handle: Any, ready: Any, agent_id: str, timeout: float) -> AgentRef:
        # Invariant: a host that did not start is killed (no Ray restarts) before
        # the error is raised, so a failed spawn leaves no actor behind.
        try:
            status = ray.get(ready, timeout=timeout)
        except GetTimeoutError as exc:
            ray.kill(handle, no_restart=True)
            raise AgentStartError(f"agent {agent_id!r} was not ready within {timeout}s", agent_id=agent_id) from exc
        except (RayError, GarrisonError) as exc:
            ray.kill(handle, no_restart=True)
            raise start_failed(agent_id, from_ray(exc, agent_id, what="start")) from exc
        if status["state"] == "failed":
            ray.kill(handle, no_restart=True)
            raise AgentStartError(f"agent {agent_id!r} failed to start: {status['failure']}", agent_id=agent_id)
        ref = AgentRef(agent_id, handle, namespace=self.namespace, sender=self.sender)
        self._spawned[agent_id] = ref
        return ref

    def lookup(self, agent_id: str) -> AgentRef:
        """A reference to a live agent by id, from any driver on the cluster."""
        return lookup_agent(agent_id, namespace=self.namespace, sender=self.sender)

    def agents(self) -> list[str]:
        """Ids of the live agents in this namespace (hosts named after their agent, and adopted ones)."""
        return _directory.live_ids(namespace=self.namespace)

    def packed_hosts(self, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The namespace's packed hosts, each with what it serves: agents placed, open and passive, its
        capacity, activations and passivations so far, pid and threads (``garrison hosts``)."""
        return self._packed.stats(timeout=timeout)

    def stop(self, agent_id: str, *, timeout: float = 30.0) -> dict[str, Any] | None:
        """Stop an agent gracefully (drain, on_stop, final checkpoint), then end its process."""
        try:
            ref = self._spawned.get(agent_id) or self.lookup(agent_id)
        except AgentNotFound:
            return None
        status = None
        stats = ref.tell_stats()
        if stats["held"] or stats["overflow_unrecorded"]:
            # Tells this driver still holds (the agent restarted) go first, in order.
            try:
                ref.flush(timeout=min(timeout, 10.0))
            except GarrisonError as exc:
                log.warning("agent %s: held tells not delivered before the stop: %s", agent_id, exc)
        if self._packed.serves(ref):  # retired by its packed host, which lives on
            self._spawned.pop(agent_id, None)
            return self._packed.stop(ref, timeout=timeout)
        try:
            status = ray.get(ref.route.handle.stop.remote(), timeout=timeout)
        except (RayActorError, GetTimeoutError) as exc:
            log.warning("agent %s did not stop gracefully (%s); killing it", agent_id, exc)
        ray.kill(ref.route.handle, no_restart=True)
        self._spawned.pop(agent_id, None)
        return status

    def kill(self, agent_id: str) -> None:
        """End the agent's process at once, without a final checkpoint and without restart.

        A packed agent has no process of its own: it is retired, as by ``stop``."""
        ref = self.lookup(agent_id)
        if self._packed.serves(ref):
            self._packed.stop(ref)
        else:
            ray.kill(ref.route.handle, no_restart=True)
        self._spawned.pop(agent_id, None)

    def metrics(self) -> str:
        """Prometheus exposition text of every agent this System spawned: one valid exposition, each
        metric family once with every agent's samples (a scrape reads Ray's export port instead)."""
        return merge_expositions(ref.admin.metrics() for ref in list(self._spawned.values()))

    def shutdown(self, *, stop_agents: bool = True) -> None:
        """Stop the agents this System spawned, and Ray if this System started it."""
        if stop_agents:
            for agent_id in list(reversed(self._spawned)):
                self.stop(agent_id)
            self._packed.shutdown()  # the packed hosts left with no agent
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


#: What a Ray started by Garrison runs with, beside the caller's ``ray_init``.  Ray starts its
#: workers at nice 15, below every ordinary process on the node: beside anything CPU-bound at
#: normal priority (a busy neighbour, a backup, a build) an agent gets about a thirtieth of the
#: share, its probes time out and its supervisor takes it for hung.  Agents are services, not batch
#: work: a Ray that Garrison starts runs them at the node's normal priority.  A cluster started
#: with ``ray start`` keeps Ray's default unless started with ``RAY_worker_niceness=0`` (README).
EMBEDDED_RAY_CONFIG: dict[str, Any] = {"worker_niceness": 0}


def embedded_ray_init(address: str | None = None, **ray_init: Any) -> dict[str, Any]:
    """``ray.init`` keyword arguments for a ``System`` (``ray_init`` wins, ``_system_config`` merged).

    Ray's system config can only be given to a Ray being started, so it is added only when
    this call starts one: no ``address`` and no ``RAY_ADDRESS`` to join.
    """
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "include_dashboard": False, "log_to_driver": False}
    starts_ray = address is None and not os.environ.get("RAY_ADDRESS")
    if starts_ray:
        kwargs["_system_config"] = {**EMBEDDED_RAY_CONFIG, **ray_init.pop("_system_config", {})}
    kwargs.update(ray_init)
    return kwargs


def _use_cluster_token() -> None:
    """Present the cluster's auth token when joining one.

    ``ray start --head`` turns Ray's token authentication on when a token
    exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``),
    but a driver given the address explicitly (``RAY_ADDRESS``) does not pick
    the token up early enough and is refused.  Ray's own helper does what a
    driver found by ``address="auto"`` gets; an explicit ``RAY_AUTH_MODE`` is
    respected.  It is private API: if a Ray version lacks it, nothing changes.
    """
    with contextlib.suppress(ImportError, AttributeError):
        from ray._private.authentication import authentication_token_setup

        authentication_token_setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _join_hint(exc: BaseException) -> str:
    """What to do about a failed join, from the cause Ray chained (by type)."""
    auth_error = getattr(ray.exceptions, "AuthenticationError", None)
    cause: BaseException | None = exc
    while cause is not None:
        if auth_error is not None and isinstance(cause, auth_error):
            return (" (the cluster refused this driver's authentication token: it uses Ray's token "
                    "authentication; give this driver the cluster's token in ~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN, and set RAY_AUTH_MODE=token)")
        cause = cause.__cause__ or cause.__context__
    return " (start one with `ray start --head`, or leave address=None for an embedded local Ray)"
