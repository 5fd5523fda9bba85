"""What a host is started from, and the checks made before anything starts."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._agent import Agent
from ._config import AgentConfig
from .exceptions import ConfigError, DataDirectoryError

__all__ = [
    "NODE_PLACEHOLDER",
    "HostSpec",
    "check_agent_id",
    "check_writable_dir",
    "expand_node",
    "local_data_dir",
    "per_node",
    "per_node_root",
]

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NODE_ID = re.compile(r"^[0-9A-Za-z]{1,128}$")

#: In a ``data_dir``, stands for the id of the Ray node the host runs on
#: (``/data/garrison/{node}``).  Each node then keeps its own local state even
#: where nodes share a filesystem (several nodes on one machine, a shared
#: mount): an agent that moves to another node finds no local copy there and
#: restores from the checkpoint store, as it would on separate machines.
NODE_PLACEHOLDER = "{node}"


def check_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not _AGENT_ID.match(agent_id):
        raise ConfigError(
            f"agent id {agent_id!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            agent_id=str(agent_id),
        )
    return agent_id


def check_writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataDirectoryError(f"{what} {p} does not exist (create it, or pass create=True)", path=str(p))
    # A real write, not os.access: root passes access checks on read-only mounts.
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".garrison-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirectoryError(f"{what} {p} is not writable: {exc.strerror}", path=str(p)) from exc
    return p


def per_node(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds the ``{node}`` placeholder (expanded in each host, never on the driver)."""
    return NODE_PLACEHOLDER in os.fspath(path)


def per_node_root(path: str | os.PathLike[str]) -> Path:
    """The part of ``path`` above its first component holding ``{node}``: the same on every node.

    ``/data/{node}/garrison`` -> ``/data``.  The driver checks (and creates) this
    part; each host creates its own node's directory below it.
    """
    p = Path(path)
    for i, part in enumerate(p.parts):
        if NODE_PLACEHOLDER in part:
            return Path(*p.parts[:i]) if i else Path(".")
    return p


def expand_node(path: str | os.PathLike[str], node_id: str) -> str:
    """``path`` with every ``{node}`` replaced by ``node_id`` (other braces are kept as they are).

    Raises ConfigError for a node id that is not a plain token (Ray's are hex),
    since it becomes a path component.
    """
    if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
        raise ConfigError(f"node id {node_id!r} cannot name a directory (expected letters and digits)")
    return os.fspath(path).replace(NODE_PLACEHOLDER, node_id)


def _ray_node_id() -> str:
    import ray  # only a per-node data_dir needs to know where this process runs

    if not ray.is_initialized():
        raise ConfigError(f"a per-node data directory ({NODE_PLACEHOLDER}) is expanded inside a Ray worker; "
                          "this process is not connected to Ray")
    return ray.get_runtime_context().get_node_id()


def local_data_dir(path: str | os.PathLike[str], node_id: str | None = None) -> Path:
    """This host's local data directory: ``path``, with ``{node}`` expanded to this node's id.

    A plain path must already exist (the System checked it).  A per-node one
    is created here, on first use on each node; ``node_id`` defaults to the
    id of the Ray node this process runs on.
    """
    if not per_node(path):
        return check_writable_dir(path, "data directory")
    expanded = Path(expand_node(path, node_id if node_id is not None else _ray_node_id()))
    try:
        expanded.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirectoryError(f"cannot create this node's data directory {expanded}: {exc}",
                                 path=str(expanded)) from exc
    return check_writable_dir(expanded, "data directory")


#: What an operator should do when a worker cannot load the agent's code.
SHIP_CODE_HINT = (
    "the Ray workers cannot import the code the driver used; ship it with the cluster: "
    "System(..., ray_init={'runtime_env': {'working_dir': '.'}}) for a project directory, or "
    "{'runtime_env': {'py_modules': [my_package]}} for a package (or install it on every node)"
)


@dataclass(frozen=True)
class HostSpec:
    """Everything a host needs to (re)build its agent; Ray replays it on restart.

    Invariant: unpickling a spec never raises.  The agent class and its
    ``init`` travel as one blob of their own; a worker that cannot load them
    (a module only the driver's ``sys.path`` has) gets a spec with
    ``agent_cls=None`` and ``load_error`` saying why, so the host reports a
    start failure instead of Ray failing (and restarting, for ever) before any
    of our code runs.
    """

    agent_id: str
    agent_cls: type[Agent] | None
    #: The local state directory; may hold ``{node}`` (see ``local_data_dir``).
    data_dir: str
    checkpoint_dir: str
    config: AgentConfig = field(default_factory=AgentConfig)
    init: dict[str, Any] = field(default_factory=dict)
    #: Why this process could not load ``agent_cls``; None when it could.
    load_error: str | None = None
    #: ``module:qualname`` of the class, kept for messages when it cannot be loaded.
    class_name: str = ""
    #: Earlier classes (``module:qualname``) whose local state this agent takes over (a deploy).
    replaces: tuple[str, ...] = ()

    @property
    def class_path(self) -> str:
        if self.agent_cls is None:
            return self.class_name
        return f"{self.agent_cls.__module__}:{self.agent_cls.__qualname__}"

    def __reduce__(self) -> tuple[Any, ...]:
        from ray import cloudpickle

        code = cloudpickle.dumps((self.agent_cls, self.init))
        return (_load_spec, (self.agent_id, self.class_path, code, self.data_dir, self.checkpoint_dir, self.config,
                             self.replaces))


def _load_spec(agent_id: str, class_name: str, code: bytes, data_dir: str, checkpoint_dir: str,
               config: AgentConfig, replaces: tuple[str, ...] = ()) -> HostSpec:
    import pickle

    try:
        agent_cls, init = pickle.loads(code)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickling raised is the user's cause
        return HostSpec(agent_id, None, data_dir, checkpoint_dir, config, {},
                        load_error=f"{type(exc).__name__}: {exc}", class_name=class_name, replaces=replaces)
    return HostSpec(agent_id, agent_cls, data_dir, checkpoint_dir, config, init, class_name=class_name,
                    replaces=replaces)
