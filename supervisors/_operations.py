"""Operators' calls on a supervisor: the kill switch and its lifting, quarantine, release, retire.

Part of :class:`supervisors._supervisor.SupervisorActor` (a mixin: it uses the
supervisor's children, restart lock and events).  Invariants: a halted or
quarantined child is never restarted behind the operator's back; a release
or retire takes the restart lock, so it never interleaves with a restart plan.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._calls import DEATH_WAIT, awaitable, first_line
from ._child import Child
from ._lifecycle import ChildState, SupervisorState, require
from .exceptions import SupervisorError

__all__ = ["Operations"]

log = logging.getLogger("garrison.supervisor")


class Operations:
    """The kill switch, unhalt, quarantine, release and retire (see module docstring)."""

    async def halt(self, who: str, why: str, child: str | None = None) -> dict[str, Any]:
        """Kill switch on one child or (``child=None``) the whole subtree.

        Halted children stop handling at once, take a final checkpoint and keep
        their state; nothing under a halted supervisor restarts.  The
        notifiers get a ``halted`` event with who and why.
        """
        self._halted_by = (who, why)
        if child is None:
            self.state = SupervisorState.HALTED
            targets = list(self._children.values())
        else:
            targets = [self._child(child)]
        results = await asyncio.gather(*(self._halt_child(c, who, why) for c in targets))
        self._emit("halted", child, who=who, why=why, details={"children": [c.id for c in targets]})
        return {"supervisor": self.name, "state": self.state.value, "halted": dict(zip([c.id for c in targets], results))}

    async def release(self, child: str | None = None, who: str = "operator", why: str = "") -> dict[str, Any]:
        """Resume after a quarantine: a quarantined child, or a quarantined supervisor's whole subtree.

        A child whose process died while quarantined is started again; it
        comes back QUARANTINED from its durable record, which the release
        then lifts (recorded in the agent with who and why).
        """
        if child is not None:
            c = self._child(child)
            if c.state is not ChildState.QUARANTINED:
                raise SupervisorError(f"child {child!r} of {self.name!r} is {c.state.name}, not QUARANTINED",
                                      supervisor=self.name, child=child)
            if not c.running:
                c.state = ChildState.STOPPED
                async with self._restart_lock:
                    await self._start_child(c)
            if c.running and c.state is ChildState.QUARANTINED:
                if c.spec.is_supervisor:  # a nested supervisor's release(child, who, why): all of it
                    await c.handle.release.remote(None, who, why)
                else:
                    await c.handle.release.remote(who, why)
                c.state = ChildState.RUNNING
                self._start_prober(c, c.generation)
            self._emit("released", child, who=who, why=why)
            return c.describe()
        require(self.state, (SupervisorState.QUARANTINED,), "release", self.name)
        self._restarts = ()
        self.state = SupervisorState.RUNNING
        async with self._restart_lock:
            for c in list(self._children.values()):
                c.state = ChildState.STOPPED
                if not c.running and self.state is SupervisorState.RUNNING:
                    await self._start_child(c)
        self._emit("released", None, who=who, why=why)
        return self.status()

    async def quarantine(self, child: str, who: str, why: str) -> dict[str, Any]:
        """Quarantine one child by hand: it refuses messages, keeps its state, is neither probed nor restarted."""
        c = self._child(child)
        await self._quarantine_child(c, why, who=who)
        self._emit("quarantined", child, who=who, why=why)
        return c.describe()

    async def unhalt(self, who: str, why: str = "", child: str | None = None) -> dict[str, Any]:
        """Lift the kill switch on one halted child or (``child=None``) the halted supervisor's whole subtree.

        A halted child still running is unhalted in place (recorded in the
        agent with who and why) and probed again; one whose process died while
        halted is started again (it comes back HALTED from its record) and then
        unhalted.  Nested supervisors lift their own subtrees.  An agent halted
        while quarantined goes back to its quarantine.
        """
        if child is None:
            require(self.state, (SupervisorState.HALTED,), "unhalt", self.name)
            self.state = SupervisorState.RUNNING
            self._halted_by = None
            targets = [c for c in self._children.values() if c.state is ChildState.HALTED]
        else:
            c = self._child(child)
            if c.state is not ChildState.HALTED:
                raise SupervisorError(f"child {child!r} of {self.name!r} is {c.state.name}, not HALTED",
                                      supervisor=self.name, child=child)
            targets = [c]
        results = {c.id: await self._unhalt_child(c, who, why) for c in targets}
        self._emit("unhalted", child, who=who, why=why, details={"children": list(results)})
        return {"supervisor": self.name, "state": self.state.value, "unhalted": results}

    async def retire(self, child: str, who: str, why: str = "retired") -> dict[str, Any]:
        """Remove a child for good: stop it (graceful, then kill; final checkpoint kept) and forget its spec.

        Its state stays on disk (local LMDB and checkpoint store) for a later
        investigation or a manual respawn; the supervisor never starts it again.
        """
        c = self._child(child)
        async with self._restart_lock:
            if c.running:
                await self._stop_child(c, f"retired by {who}: {why}")
            del self._children[child]
        self._emit("retired", child, who=who, why=why)
        return c.describe()

    async def _quarantine_child(self, child: Child, why: str, who: str = "supervisor") -> None:
        child.state = ChildState.QUARANTINED
        child.last_failure = why if who == "supervisor" else f"{why} (by {who})"
        for task in child.tasks[1:]:  # probers: a quarantined child is not judged again
            if task is not asyncio.current_task():
                task.cancel()
        del child.tasks[1:]
        if child.running:
            try:
                await asyncio.wait_for(awaitable(child.handle.quarantine.remote(why, who)), DEATH_WAIT)
            except Exception as exc:
                log.warning("supervisor %s: quarantine of %s failed: %s", self.name, child.id, exc)

    async def _unhalt_child(self, child: Child, who: str, why: str) -> Any:
        if not child.running:
            child.state = ChildState.STOPPED
            async with self._restart_lock:
                await self._start_child(child)  # an agent restores its halt: lifted below
        if not child.running:
            return child.describe()
        try:
            result = await asyncio.wait_for(awaitable(child.handle.unhalt.remote(who, why)), DEATH_WAIT)
        except Exception as exc:
            return {"error": first_line(exc)}
        if not child.spec.is_supervisor and result.get("state") == "quarantined":
            child.state = ChildState.QUARANTINED  # halted while quarantined: back to that, not probed
        else:
            child.state = ChildState.RUNNING
            self._start_prober(child, child.generation)
        return result

    async def _halt_child(self, child: Child, who: str, why: str) -> Any:
        child.state = ChildState.HALTED
        for task in child.tasks[1:]:  # probers: a halted child is not probed
            task.cancel()
        del child.tasks[1:]
        if not child.running:
            return None
        try:
            return await asyncio.wait_for(awaitable(child.handle.halt.remote(who, why)), DEATH_WAIT)
        except Exception as exc:
            return {"error": first_line(exc)}
