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


@dataclass(frozen=True)
class HostSpec:
    """Everything a host needs to (re)build its agent; Ray replays it on restart."""

    agent_id: str
    agent_cls: type[Agent]
    #: The local state directory; may hold ``{node}`` (see ``local_data_dir``).
    data_dir: str
    checkpoint_dir: str
    config: AgentConfig = field(default_factory=AgentConfig)
    init: dict[str, Any] = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        return f"{self.agent_cls.__module__}:{self.agent_cls.__qualname__}"
