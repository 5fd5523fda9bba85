"""Deploying a new version of an agent child through its supervisor, and rolling back to an earlier one.

A deploy gives one agent child a new spec (another agent class, config fields
or constructor arguments).  Holding the restart lock, the supervisor stops the
child gracefully, as for a planned stop: no new message is handled, the
handler in progress finishes under the version it started under, the outbox
and the state are kept and a final checkpoint is taken.  Then it starts the
child under the new spec: the new incarnation restores the state and records
its version's manifest in the agent's audit log (``runtime._version``), which
is the boundary: every record after it carries the new version's hash.
Messages sent meanwhile wait in their senders' outboxes (a driver's ask
retries) and are handled once each, by the new version; an approval pending
across a deploy that changes the config is void (it is bound to the config).

A rollback deploys an earlier spec from the child's history again.  The state
is *not* rolled back: what the agent stored since stays (the article's caveat:
a rollback may not restore earlier behaviour if the agent learned since); the
boundary is recorded the same way.

Each deploy and rollback is an operator action (the ``admin`` role when an
operators file is set), recorded with who and why in the agent's operator and
audit logs and as a supervisor event (``deployed``, with the versions it went
from and to).  The history (:attr:`Child.deployments`: each spec with its
version hash, who, why, when) lives in the supervisor's memory: a supervisor
that restarts starts its children from the spec it was started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime._gatekeeper import RUNTIME
from runtime._version import agent_manifest, version_hash

from ._calls import DEATH_WAIT, awaitable
from ._child import Child
from ._lifecycle import ChildState
from ._port import SupervisorPort
from ._spec import ChildSpec
from .exceptions import SupervisorError

__all__ = ["Deployer", "Deployment", "child_version"]

log = logging.getLogger("garrison.supervisor")


@dataclass(frozen=True)
class Deployment:
    """One spec a child ran under: its version hash, and who deployed it, why and when."""

    spec: ChildSpec
    version: str
    who: str
    auth: str
    why: str
    at: float

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "who": self.who, "auth": self.auth, "why": self.why, "at": self.at}


def _class_path(cls: Any) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def child_version(spec: ChildSpec) -> str:
    """The version hash an agent child's spec runs under (as its host records it)."""
    assert spec.agent is not None
    return version_hash(agent_manifest(_class_path(spec.agent), spec.agent, spec.config))


class Deployer:
    """Deploys and rolls back agent children (see module docstring)."""

    def __init__(self, name: str, port: SupervisorPort, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._port = port
        self._clock = clock

    def history(self, child: Child) -> list[Deployment]:
        """``child``'s deployments, oldest first; the first is the spec the supervisor started it with."""
        if not child.deployments:
            child.deployments.append(Deployment(child.spec, child_version(child.spec), "spec", RUNTIME,
                                                "the supervisor's spec", self._clock()))
        return child.deployments

    async def deploy(self, child_id: str, change: dict[str, Any], who: str, why: str, auth: str) -> dict[str, Any]:
        """Run ``child_id`` under its spec with ``change`` (``agent``, ``config`` fields, ``init``)."""
        child = self._deployable(child_id)
        unknown = set(change) - {"agent", "config", "init"}
        if unknown or not change:
            raise SupervisorError(f"a deploy changes agent=, config= (fields) or init=, not {sorted(unknown) or 'nothing'}",
                                  supervisor=self.name, child=child_id)
        fields = {name: getattr(child.spec, name) for name in ChildSpec.model_fields}
        if "config" in change:
            fields["config"] = child.spec.config.model_copy(update=change["config"]).model_dump()
        spec = ChildSpec.model_validate({**fields, **{k: v for k, v in change.items() if k != "config"}})
        return await self._run(child, spec, "deploy", who, why, auth)

    async def rollback(self, child_id: str, to: str | None, who: str, why: str, auth: str) -> dict[str, Any]:
        """Run ``child_id`` again under an earlier deployment: the one before the current (``to`` None), or
        the newest whose version hash starts with ``to``."""
        child = self._deployable(child_id)
        history = self.history(child)
        current = history[-1].version
        earlier = [d for d in history[:-1] if d.version != current and (to is None or d.version.startswith(to)
                                                                           or d.version[len("sha256:"):].startswith(to))]
        if not earlier:
            raise SupervisorError(f"child {child_id!r} has no earlier version {to or ''} to roll back to; it ran "
                                  f"{[d.version for d in history]}", supervisor=self.name, child=child_id)
        return await self._run(child, earlier[-1].spec, "rollback", who, why, auth)

    def _deployable(self, child_id: str) -> Child:
        child = self._port.child(child_id)
        if child.spec.is_supervisor:
            raise SupervisorError(f"child {child_id!r} is a supervisor: deploy its agents through it",
                                  supervisor=self.name, child=child_id)
        if child.state in (ChildState.HALTED, ChildState.QUARANTINED):
            raise SupervisorError(f"child {child_id!r} is {child.state.name}: lift that first",
                                  supervisor=self.name, child=child_id)
        return child

    async def _run(self, child: Child, spec: ChildSpec, action: str, who: str, why: str, auth: str) -> dict[str, Any]:
        history = self.history(child)
        before, version = history[-1].version, child_version(spec)
        # The new class takes over the state every earlier class of this child wrote.
        classes = {_class_path(d.spec.agent) for d in history} | set(spec.replaces)
        spec = spec.model_copy(update={"replaces": tuple(sorted(classes - {_class_path(spec.agent)}))})
        # In the history first: a version that fails to start is still the one configured (and rolled back from).
        history.append(Deployment(spec, version, who, auth, why, self._clock()))
        await self._port.replace_child(child, f"{action} by {who}: {why}", spec)
        if child.running:  # in the agent's own operator and audit logs, after its new manifest record
            try:
                await asyncio.wait_for(awaitable(child.handle.record_operation.remote(
                    action, who, f"{why} ({before} -> {version})", auth)), DEATH_WAIT)
            except Exception as exc:  # noqa: BLE001 - deployed; the supervisor's event still records it
                log.warning("supervisor %s: %s of %s not recorded in the agent: %s", self.name, action, child.id, exc)
        self._port.emit("deployed", child.id, who=who, why=why,
                        details={"action": action, "from": before, "to": version})
        return {**child.describe(), "version": version, "previous": before}
