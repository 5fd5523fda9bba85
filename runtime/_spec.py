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

__all__ = ["HostSpec", "check_agent_id", "check_writable_dir"]

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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


@dataclass(frozen=True)
class HostSpec:
    """Everything a host needs to (re)build its agent; Ray replays it on restart."""

    agent_id: str
    agent_cls: type[Agent]
    data_dir: str
    checkpoint_dir: str
    config: AgentConfig = field(default_factory=AgentConfig)
    init: dict[str, Any] = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        return f"{self.agent_cls.__module__}:{self.agent_cls.__qualname__}"
