"""Monitors: any caller can wait for an agent to go down and learn why (OTP's ``monitor/2``).

One pending ``watch`` call on the agent's host does it, without polling: it
returns when the agent stops gracefully and fails when its process dies.  An
agent that is not live at all is reported down at once (OTP's ``noproc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from runtime import NAMESPACE, AgentNotFound, host_of

__all__ = ["Down", "Monitor", "monitor", "wait_down"]


@dataclass(frozen=True)
class Down:
    """An agent went down.  ``reason``: "normal" (graceful stop), "crash" (process died) or "noproc"."""

    agent_id: str
    reason: str
    detail: str = ""
    #: The agent's last status, for a graceful stop.
    status: dict[str, Any] | None = None


class Monitor:
    """A pending watch on one agent; ``await`` it (in an async actor) or call :meth:`wait`."""

    def __init__(self, agent_id: str, namespace: str = NAMESPACE) -> None:
        self.agent_id = agent_id
        try:
            self._ref: Any = host_of(agent_id, namespace=namespace).watch.remote()
        except AgentNotFound:
            self._ref = None

    def _down(self, outcome: Any) -> Down:
        if isinstance(outcome, RayActorError):
            text = str(outcome).strip().splitlines()
            return Down(self.agent_id, "crash", text[0] if text else type(outcome).__name__)
        return Down(self.agent_id, "normal", "stopped gracefully", status=outcome)

    def wait(self, timeout: float | None = None) -> Down | None:
        """Block until the agent is down (None if still up after ``timeout`` seconds)."""
        if self._ref is None:
            return Down(self.agent_id, "noproc", "no live agent with that id")
        try:
            return self._down(ray.get(self._ref, timeout=timeout))
        except GetTimeoutError:
            return None
        except RayActorError as exc:
            return self._down(exc)

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._await().__await__()

    async def _await(self) -> Down:
        if self._ref is None:
            return Down(self.agent_id, "noproc", "no live agent with that id")
        try:
            return self._down(await self._ref)
        except RayActorError as exc:
            return self._down(exc)


def monitor(agent_id: str, *, namespace: str = NAMESPACE) -> Monitor:
    """Start watching ``agent_id`` now; the result tells when and why it went down."""
    return Monitor(agent_id, namespace)


def wait_down(agent_id: str, *, timeout: float | None = None, namespace: str = NAMESPACE) -> Down | None:
    """Block until ``agent_id`` is down; None if it is still up after ``timeout``."""
    return monitor(agent_id, namespace=namespace).wait(timeout)
