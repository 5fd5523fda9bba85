"""One live host per agent id per data directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .exceptions import AgentAlreadyRunning

__all__ = ["HostLock"]


class HostLock:
    """An exclusive ``flock`` on the agent's lock file; the kernel releases it when the process dies."""

    def __init__(self, path: Path, agent_id: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            raise AgentAlreadyRunning(
                f"agent {agent_id!r} is already live on this node (lock {path} is held)", agent_id=agent_id
            ) from exc
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
