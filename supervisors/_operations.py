"""Operators' calls on a supervisor: the kill switch and its lifting, quarantine, release, retire.

:class:`Operators` is the supervisor's collaborator for these calls (the
supervisor actor's ``halt``, ``unhalt``, ``quarantine``, ``release`` and
``retire`` delegate to it) and for what a child gets when halted, unhalted or
quarantined.  It owns the kill switch's record (who pulled it, why), which a
child started while it holds is halted with at once (:meth:`reapply_halt`).
It acts on the supervisor only through its :class:`SupervisorPort`, and
resumes a child's probing through the :class:`Prober` it is given.

Invariants: a halted or quarantined child is never restarted behind the
operator's back (the supervisor's exit and restart paths skip both states,
and only the calls here leave them); a release, an unhalt or a retire starts
or stops a child through the port, which holds the restart lock, so it never
interleaves with a restart plan; a halted or quarantined child is not probed
(its prober is cancelled here, and started again only when lifted).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from audit import AccessDenied, Identity
from runtime._gatekeeper import RUNTIME

from ._calls import DEATH_WAIT, awaitable, first_line
from ._child import Child
from ._deploy import Deployer
from ._lifecycle import ChildState
from ._port import SupervisorPort
from ._probing import Prober
from .exceptions import SupervisorError

__all__ = ["ACTIONS", "Operators"]

log = logging.getLogger("garrison.supervisor")


#: What an operator can do through a supervisor (each needs a role: ``audit.GRANTS``).
ACTIONS = frozenset({"halt", "unhalt", "quarantine", "release", "deploy", "rollback"})


class Operators:
    """The kill switch, unhalt, quarantine, release and retire of supervisor ``name`` (see module docstring)."""

    def __init__(self, name: str, port: SupervisorPort, prober: Prober, deployer: Deployer | None = None) -> None:
        self.name = name
        self._deployer = deployer
        self._port = port
        self._prober = prober
        #: ``(who, why, auth)`` of the kill switch pulled on the whole subtree, until it is lifted.
        self._halted_by: tuple[str, str, str] | None = None
        #: ``(who, why, auth)`` of each single child's kill switch, until that child's is lifted.
        self._child_halts: dict[str, tuple[str, str, str]] = {}

    async def operate(self, action: str, me: Identity, args: dict[str, Any]) -> dict[str, Any]:
        """An admitted operator's ``action`` (:data:`ACTIONS`) with ``args`` (``why``; ``child``, None: the
        subtree); ``me``'s name and ``auth`` go down to every agent's record."""
        why, child = args.get("why", ""), args.get("child")
        if action == "halt":
            return await self.halt(me.name, why, child, me.auth)
        if action == "unhalt":
            return await self.unhalt(me.name, why, child, me.auth)
        if action == "release":
            return await self.release(child, me.name, why, me.auth)
        if action in ("deploy", "rollback") and self._deployer is not None:
            if child is None:
                raise SupervisorError(f"a {action} needs the agent child it is for", supervisor=self.name)
            if action == "deploy":
                change = {k: args[k] for k in ("agent", "config", "init") if args.get(k) is not None}
                return await self._deployer.deploy(child, change, me.name, why, me.auth)
            return await self._deployer.rollback(child, args.get("to"), me.name, why, me.auth)
        if action == "quarantine":
            if child is None:
                raise SupervisorError("a quarantine needs the child to quarantine", supervisor=self.name)
            return await self.quarantine(child, me.name, why, me.auth)
        raise AccessDenied(f"{action!r} is not an operator action on a supervisor; one of {sorted(ACTIONS)}",
                           check="action")

    async def halt(self, who: str, why: str, child: str | None = None, auth: str = RUNTIME) -> dict[str, Any]:
        """Kill switch on one child or (``child=None``) the whole subtree.

        Halted children stop handling at once, take a final checkpoint and keep
        their state; nothing under a halted supervisor restarts.  The
        notifiers get a ``halted`` event with who and why.  ``auth``: how ``who`` was
        established (``runtime._gatekeeper``), passed on to every agent's record.
        """
        if child is None:
            self._halted_by = (who, why, auth)
            self._port.halt_subtree()
            targets = self._port.children()
        else:
            targets = [self._port.child(child)]  # ChildNotFound before anything is recorded
            self._child_halts[child] = (who, why, auth)
        results = await asyncio.gather(*(self.halt_child(c, who, why, auth) for c in targets))
        self._port.emit("halted", child, who=who, why=why, details={"children": [c.id for c in targets]})
        return {"supervisor": self.name, "state": self._port.state().value,
                "halted": dict(zip([c.id for c in targets], results))}

    async def release(self, child: str | None = None, who: str = "operator", why: str = "",
                      auth: str = RUNTIME) -> dict[str, Any]:
        """Resume after a quarantine: a quarantined child, or a quarantined supervisor's whole subtree.

        A child whose process died while quarantined is started again; it
        comes back QUARANTINED from its durable record, which the release
        then lifts (recorded in the agent with who and why).
        """
        if child is None:
            await self._port.release_subtree()
            self._port.emit("released", None, who=who, why=why)
            return self._port.status()
        c = self._port.child(child)
        if c.state is not ChildState.QUARANTINED:
            raise SupervisorError(f"child {child!r} of {self.name!r} is {c.state.name}, not QUARANTINED",
                                  supervisor=self.name, child=child)
        if not c.running:
            c.state = ChildState.STOPPED
            await self._port.start_child(c)
        if c.running and c.state is ChildState.QUARANTINED:
            if not c.spec.is_supervisor:  # a nested supervisor was only marked (``quarantine_child``)
                await c.handle.release.remote(who, why, auth=auth)
            c.state = ChildState.RUNNING
            self._prober.start(c, c.generation)
        self._port.emit("released", child, who=who, why=why)
        return c.describe()

    async def quarantine(self, child: str, who: str, why: str, auth: str = RUNTIME) -> dict[str, Any]:
        """Quarantine one agent child by hand: it refuses messages, keeps its state, is neither probed nor
        restarted.  A nested supervisor is refused: quarantine its agents through it, or halt its subtree."""
        c = self._port.child(child)
        if c.spec.is_supervisor:
            raise SupervisorError(f"child {child!r} of {self.name!r} is a supervisor: quarantine its agents "
                                  f"through it (supervisor={child!r}), or halt its subtree",
                                  supervisor=self.name, child=child)
        await self.quarantine_child(c, why, who=who, auth=auth)
        return c.describe()

    async def unhalt(self, who: str, why: str = "", child: str | None = None, auth: str = RUNTIME) -> dict[str, Any]:
        """Lift the kill switch on one halted child or (``child=None``) the halted supervisor's whole subtree.

        A halted child still running is unhalted in place (recorded in the
        agent with who and why) and probed again; one whose process died while
        halted is started again (it comes back HALTED from its record) and then
        unhalted.  Nested supervisors lift their own subtrees.  An agent halted
        while quarantined goes back to its quarantine.
        """
        if child is None:
            self._port.lift_halt()
            self._halted_by = None
            self._child_halts.clear()
            targets = [c for c in self._port.children() if c.state is ChildState.HALTED]
        else:
            c = self._port.child(child)
            if c.state is not ChildState.HALTED:
                raise SupervisorError(f"child {child!r} of {self.name!r} is {c.state.name}, not HALTED",
                                      supervisor=self.name, child=child)
            self._child_halts.pop(child, None)
            targets = [c]
        results = {c.id: await self.unhalt_child(c, who, why, auth) for c in targets}
        self._port.emit("unhalted", child, who=who, why=why, details={"children": list(results)})
        return {"supervisor": self.name, "state": self._port.state().value, "unhalted": results}

    async def retire(self, child: str, who: str, why: str = "retired") -> dict[str, Any]:
        """Remove a child for good: stop it (graceful, then kill; final checkpoint kept) and forget its spec.

        Its state stays on disk (local LMDB and checkpoint store) for a later
        investigation or a manual respawn; the supervisor never starts it again.
        """
        c = self._port.child(child)
        await self._port.replace_child(c, f"retired by {who}: {why}", None)
        self._port.emit("retired", child, who=who, why=why)
        return c.describe()

    # -- per child ---------------------------------------------------------------------

    async def reapply_halt(self, child: Child) -> bool:
        """Halt a just-started child if a kill switch holds (pulled while it was spawned); True if it did."""
        halted_by = self._child_halts.get(child.id) or self._halted_by
        if halted_by is None:
            return False
        await self.halt_child(child, *halted_by)
        return True

    async def quarantine_child(self, child: Child, why: str, who: str = "supervisor", auth: str = RUNTIME) -> None:
        """QUARANTINED: its prober cancelled, the agent told (it refuses messages and keeps its state).

        A nested supervisor (quarantined by its prober: it stopped answering) is
        only marked: left as it is, neither probed nor restarted, for an
        operator to look at; it has no quarantine of its own to be told of.
        """
        child.state = ChildState.QUARANTINED
        child.last_failure = why if who == "supervisor" else f"{why} (by {who})"
        # The event with the state change (one step of the actor's loop): whoever sees the one sees the other.
        self._port.emit("quarantined", child.id, who=who, why=why)
        for task in child.tasks[1:]:  # probers: a quarantined child is not judged again
            if task is not asyncio.current_task():
                task.cancel()
        del child.tasks[1:]
        if child.running and not child.spec.is_supervisor:
            try:
                await asyncio.wait_for(awaitable(child.handle.quarantine.remote(why, who, auth=auth)), DEATH_WAIT)
            except Exception as exc:
                log.warning("supervisor %s: quarantine of %s failed: %s", self.name, child.id, exc)

    async def unhalt_child(self, child: Child, who: str, why: str, auth: str = RUNTIME) -> Any:
        """Lift one child's halt (starting it first if its process died); probed again unless back in quarantine."""
        if not child.running:
            child.state = ChildState.STOPPED
            await self._port.start_child(child)  # an agent restores its halt: lifted below
        if not child.running:
            return child.describe()
        try:
            result = await asyncio.wait_for(awaitable(child.handle.unhalt.remote(who, why, auth=auth)), DEATH_WAIT)
        except Exception as exc:
            return {"error": first_line(exc)}
        if not child.spec.is_supervisor and result.get("state") == "quarantined":
            child.state = ChildState.QUARANTINED  # halted while quarantined: back to that, not probed
        else:
            child.state = ChildState.RUNNING
            self._prober.start(child, child.generation)
        return result

    async def halt_child(self, child: Child, who: str, why: str, auth: str = RUNTIME) -> Any:
        """HALTED: its prober cancelled, the agent (or nested supervisor) told; its answer, or None if not running."""
        child.state = ChildState.HALTED
        for task in child.tasks[1:]:  # probers: a halted child is not probed
            task.cancel()
        del child.tasks[1:]
        if not child.running:
            return None
        try:
            return await asyncio.wait_for(awaitable(child.handle.halt.remote(who, why, auth=auth)), DEATH_WAIT)
        except Exception as exc:
            return {"error": first_line(exc)}
