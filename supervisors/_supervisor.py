"""The supervisor: a Ray actor that starts, watches, restarts and stops its children.

It is an async actor; every decision is made on its one event loop, so the
children's records need no locks.  Blocking work (spawning an agent, which
waits for it to be ready; notifying humans) runs in threads, so supervision
never stalls behind it: while a child restarts, the supervisor still answers
introspection, watches the other children and probes them.

The rooms: this module owns the supervisor's lifecycle state, the children
table, the restart lock and the intensity window, and makes every restart
decision.  Its collaborators each own one concern and reach the supervisor
only through the :class:`SupervisorPort` it hands them (``_port.py``, the one
list of what they may ask): the :class:`Prober` (``_probing``: liveness probes,
what a suspect or degraded child gets), the :class:`SparePool` (``_standby``:
warm spares), the :class:`Operators` (``_operations``: halt, unhalt,
quarantine, release, retire).  Helpers that hold no supervision state do
the mechanics: :class:`Incarnations` (``_incarnation``: start, watch, stop
and kill one incarnation; it reports exits to :meth:`_exited`), the
:class:`Spawner` (``_spawn``: an incarnation's process), the
:class:`EventLog` and :class:`TaskSet` (``_events``: events, notifiers,
background tasks).

Per child, per incarnation, two tasks:

* a *monitor* (run by :class:`Incarnations`) awaits the child's pending
  ``watch`` call.  It returns when the child stops gracefully (exit reason
  ``normal``) and fails with Ray's actor error when the process dies
  (``crash``): crash detection without polling.  Children are spawned with
  ``max_restarts=0``, so only the supervisor restarts them.
* a *prober* (only with a :class:`ProbePolicy`), run by the :class:`Prober`; a
  suspect child is killed and restarted (exit reason ``hung``) or quarantined,
  per the policy.

Warm standby (``flags.standby``): an agent child is started by handing its
spec to a spare when the :class:`SparePool` has one ready (``adopt``: restore,
serve, record itself in the agent directory), and the spare is replaced in
the background; with no spare ready, a child placed otherwise than the spares
(``ray_options``), or if the adoption fails, the start is a cold one.

On an exit the supervisor asks :func:`plan_restart` what to do, counts the
restart with :func:`add_restart` (too many: escalate), waits the backoff
without holding anything, then, holding ``_restart_lock``, stops the plan's
running children in reverse start order and starts the plan's children in
start order.  A start that fails counts as another exit (``start_failed``), so
it is retried, within the intensity, by the same path.

Invariants:

* At most one restart plan is carried out at a time (``_restart_lock``); a
  stop, an escalation, and every start or removal a collaborator asks for
  through the port take the same lock, so none interleaves with a plan.
* No child is started while the supervisor is not RUNNING (checked under the
  lock before each start); a stop therefore leaves nothing behind.
* ``Child.generation`` fences the monitor and prober of a replaced
  incarnation: each death is acted on once.
* A halted or quarantined child is never restarted: the exit and restart
  paths skip both states (only the :class:`Operators` lift them).
* Stopping or escalating kills the warm spares.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from runtime import System
from runtime._gatekeeper import RUNTIME, Gatekeeper

from ._backoff import consecutive_failures, restart_delay
from ._child import Child
from ._deploy import Deployer
from ._events import EventLog, TaskSet
from ._incarnation import Incarnations
from ._intensity import add_restart
from ._lifecycle import ChildState, SupervisorState, require
from ._metrics import event_counts
from ._notifier import Notifier
from ._operations import Operators
from ._port import SupervisorPort
from ._probing import Prober
from ._spawn import Spawner
from ._spec import ChildSpec, Strategy, SupervisorSpec, inherit_operators
from ._standby import SparePool, spare_placement
from ._strategy import ExitReason, Plan, plan_restart
from .exceptions import ChildNotFound, ChildStartError, SpecError, SupervisorError

__all__ = ["RemoteSupervisor", "SupervisorActor"]

log = logging.getLogger("garrison.supervisor")


def pool_child_spec(template: ChildSpec, child_id: str, init: dict[str, Any] | None) -> ChildSpec:
    """A simple_one_for_one pool's new child: the template with this id (and ``init``, if given)."""
    update: dict[str, Any] = {"id": child_id}
    if init is not None:
        update["init"] = init
    return ChildSpec(**{**template.model_dump(exclude={"shutdown"}), **update, "shutdown": template.shutdown})


def new_pool_children(name: str, strategy: Strategy, template: ChildSpec | None, existing: dict[str, Child],
                      child_ids: list[str], init: dict[str, Any] | None) -> list[Child]:
    """Children ``child_ids`` of the simple_one_for_one pool ``name``, from its template (``init``, if
    given); SpecError for another strategy, or an id the pool has (or that repeats), before any is made."""
    if template is None:
        raise SpecError(f"supervisor {name!r} is {strategy.value}: "
                        "only a simple_one_for_one pool starts children dynamically", supervisor=name)
    for i, child_id in enumerate(child_ids):
        if child_id in existing or child_id in child_ids[:i]:
            raise SpecError(f"supervisor {name!r} already has a child {child_id!r}", supervisor=name)
    return [Child(pool_child_spec(template, child_id, init)) for child_id in child_ids]


class SupervisorActor:
    """One supervisor (see module docstring).  Create it with :func:`supervisors.start_supervisor`.

    Its public methods are its Ray API; the operators' calls and ``spares``
    delegate to the collaborators that own them.
    """

    def __init__(self, spec: SupervisorSpec, *, data_dir: str, checkpoint_dir: str, namespace: str,
                 notifiers: tuple[Notifier, ...] = (), root: bool = True, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec = inherit_operators(spec)
        self.name = spec.id
        self.root = root
        self.state = SupervisorState.STARTING
        self._rng = random.Random(seed)
        self._clock = clock
        self._pool = spec.flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE
        self._template: ChildSpec | None = spec.children[0] if self._pool else None
        # Invariant: insertion order is start order (the order plans use).
        self._children: dict[str, Child] = {} if self._pool else {c.id: Child(c) for c in spec.children}
        self._restarts: tuple[float, ...] = ()
        self._restart_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._escalation: str | None = None
        self._early_exits: list[tuple[Child, ExitReason, str | None]] = []
        self._events = EventLog(self.name, tuple(notifiers), counts=event_counts(self.name))
        self._tasks = TaskSet(self._events)
        system = System(data_dir, checkpoint_dir=checkpoint_dir, namespace=namespace)
        self._spawner = Spawner(self.name, system, namespace=namespace, data_dir=data_dir,
                                checkpoint_dir=checkpoint_dir, notifiers=tuple(notifiers),
                                supervisor_class=RemoteSupervisor)
        port = SupervisorPort(
            emit=self._events.emit, spawn_task=self._tasks.spawn, state=lambda: self.state, status=self.status,
            child=self._child, children=lambda: list(self._children.values()), start_child=self._start_locked,
            replace_child=self._replace_child, kill_and_exit=self._kill_and_exit,
            quarantine_child=lambda child, why: self._operators.quarantine_child(child, why),
            halt_subtree=self._halt_subtree, lift_halt=self._lift_halt, release_subtree=self._release_subtree,
        )
        self._spares = SparePool(port, target=spec.flags.standby, options=spare_placement(list(spec.children)),
                                 spawn=self._spawner.spawn_spare)
        self._incarnations = Incarnations(self.name, spawner=self._spawner, spares=self._spares,
                                          emit=self._events.emit, spawn_task=self._tasks.spawn, clock=clock,
                                          on_exit=self._exited)
        self._prober = Prober(port)
        self._operators = Operators(self.name, port, self._prober, Deployer(self.name, port))
        self._gatekeeper = Gatekeeper(spec.flags.operators, (self.name,))  # admits operators' calls

    # -- public calls --------------------------------------------------------------

    async def start(self) -> list[dict[str, Any]]:
        """Start the children in order; on a failure stop those started, in reverse, and raise ChildStartError."""
        require(self.state, (SupervisorState.STARTING,), "start", self.name)
        try:
            await start_all(list(self._children.values()), self.spec.flags.start_concurrency, self._start_child)
        except ChildStartError as exc:
            self.state = SupervisorState.FAILED
            self._events.emit("start_failed", exc.details.get("child"), why=exc.message)
            await self._stop_children(f"{exc.details.get('child')} failed to start")
            self._done.set()
            raise
        self.state = SupervisorState.RUNNING
        self._events.emit("running", None, why=f"{len(self._children)} children started")
        self._spares.replenish()
        early, self._early_exits = self._early_exits, []
        for child, reason, failure in early:
            self._exited(child, reason, failure)
        return self.which_children()

    def which_children(self) -> list[dict[str, Any]]:
        """Every child in start order: kind, state, incarnation, pid, restarts, last failure."""
        return [c.describe() for c in self._children.values()]

    def status(self) -> dict[str, Any]:
        """Lifecycle state, strategy, restarts in the intensity window, escalation, spares ready, pid, children."""
        return {"id": self.name, "state": self.state.value, "root": self.root,
                "strategy": self.spec.flags.strategy.value, "restarts_in_window": len(self._restarts),
                "escalation": self._escalation, "spares": self._spares.ready, "pid": os.getpid(),
                "children": self.which_children()}

    def probe(self) -> dict[str, Any]:
        """Liveness, for a parent's prober: the event loop answered."""
        return {"state": self.state.value, "pid": os.getpid(), "handler_running_for": None}

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """Events with ``index >= after``, oldest first (the newest ``_events.EVENT_LIMIT`` are kept)."""
        return self._events.since(after)

    async def watch(self) -> dict[str, Any]:
        """Pending until this supervisor is done; raises if it escalated (its parent then acts)."""
        await self._done.wait()
        if self._escalation is not None:
            raise SupervisorError(f"supervisor {self.name!r} escalated: {self._escalation}", supervisor=self.name)
        return self.status()

    async def stop(self, why: str = "stop requested") -> dict[str, Any]:
        """Stop every child in reverse start order (graceful, shutdown timeout, hard kill)."""
        if self.state is SupervisorState.STOPPED:
            return self.status()
        self.state = SupervisorState.STOPPING
        await self._stop_children(why)
        self._spares.kill_all()
        self.state = SupervisorState.STOPPED
        self._events.emit("stopped", None, why=why)
        self._done.set()
        return self.status()

    async def start_child(self, child_id: str, init: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add a child to a simple_one_for_one pool, from the template, and start it."""
        return (await self.start_children([child_id], init))[0]

    async def start_children(self, child_ids: list[str], init: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Add pool children (see ``new_pool_children``) and start them, ``start_concurrency`` at a time."""
        require(self.state, (SupervisorState.RUNNING,), "start a child", self.name)
        children = new_pool_children(self.name, self.spec.flags.strategy, self._template, self._children, child_ids, init)
        self._children.update((c.id, c) for c in children)
        async with self._restart_lock:
            try:
                await start_all(children, self.spec.flags.start_concurrency, self._start_child)
            except ChildStartError:  # each that failed (or never began) has no handle: it goes
                for c in [c for c in children if not c.running]:
                    self._children.pop(c.id, None)
                raise
        return [c.describe() for c in children]

    async def terminate_child(self, child_id: str, why: str = "terminated") -> dict[str, Any]:
        """Stop one child (graceful, then kill); a pool child is also removed."""
        child = self._child(child_id)
        async with self._restart_lock:
            if child.running:
                await self._incarnations.stop(child, why)
            if self._pool:
                del self._children[child_id]
        return child.describe()

    async def spares(self) -> list[dict[str, Any]]:
        """The warm spares ready now (state ``spare``, pid)."""
        return await self._spares.describe()

    async def halt(self, who: str, why: str, child: str | None = None, auth: str = RUNTIME) -> dict[str, Any]:
        """Kill switch on one child or the subtree, for the runtime (a parent's halt); operators: ``operate``."""
        return await self._operators.halt(who, why, child, auth)

    async def unhalt(self, who: str, why: str = "", child: str | None = None, auth: str = RUNTIME) -> dict[str, Any]:
        """Lift the kill switch on one halted child or the halted subtree (see ``Operators.unhalt``)."""
        return await self._operators.unhalt(who, why, child, auth)

    async def operate(self, action: str, who: Any, args: dict[str, Any]) -> dict[str, Any]:
        """An operator's ``action`` once ``who`` is admitted for it (``SupervisorFlags.operators``; see
        ``Operators.operate``)."""
        return await self._operators.operate(action, self._gatekeeper.admit(action, who), args)

    async def retire(self, child: str, who: str, why: str = "retired") -> dict[str, Any]:
        """Stop a child for good and forget it; its state stays on disk (see ``Operators.retire``)."""
        return await self._operators.retire(child, who, why)

    # -- the port (see ``_port``) -------------------------------------------------------

    def _child(self, child_id: str) -> Child:
        try:
            return self._children[child_id]
        except KeyError:
            raise ChildNotFound(f"supervisor {self.name!r} has no child {child_id!r}",
                                supervisor=self.name, child=child_id) from None

    async def _start_locked(self, child: Child) -> None:
        async with self._restart_lock:
            await self._start_child(child)

    async def _replace_child(self, child: Child, why: str, spec: ChildSpec | None) -> None:
        async with self._restart_lock:
            if child.running:
                await self._incarnations.stop(child, why)
            if spec is not None:  # a deploy: the same child, under another spec
                child.spec = spec
                return await self._start_child(child)
            del self._children[child.id]

    async def _kill_and_exit(self, child: Child, reason: ExitReason, failure: str) -> None:
        await self._incarnations.kill(child)
        self._exited(child, reason, failure)

    def _halt_subtree(self) -> None:
        self.state = SupervisorState.HALTED

    def _lift_halt(self) -> None:
        require(self.state, (SupervisorState.HALTED,), "unhalt", self.name)
        self.state = SupervisorState.RUNNING

    async def _release_subtree(self) -> None:
        require(self.state, (SupervisorState.QUARANTINED,), "release", self.name)
        self._restarts = ()
        self.state = SupervisorState.RUNNING
        async with self._restart_lock:
            for c in list(self._children.values()):
                c.state = ChildState.STOPPED
                if not c.running and self.state is SupervisorState.RUNNING:
                    await self._start_child(c)

    # -- starting and stopping -----------------------------------------------------------

    async def _start_child(self, child: Child) -> None:
        gen, info = await self._incarnations.start(child)
        halted = child.state is ChildState.HALTED or self.state is SupervisorState.HALTED
        child.state = ChildState.RUNNING
        # Invariant: a kill switch pulled while this child was being spawned still applies to it.
        if halted and await self._operators.reapply_halt(child):
            return
        if not child.spec.is_supervisor and info.get("state") == "quarantined":
            # Its durable record says so (quarantined by an operator before it died):
            # kept as it is, neither probed nor restarted, until a release.
            child.state = ChildState.QUARANTINED
            child.last_failure = "came back quarantined (its record in the agent's state)"
            return
        self._prober.start(child, gen)

    async def _stop_children(self, why: str) -> None:
        async with self._restart_lock:
            for child in reversed(list(self._children.values())):
                if child.running:
                    await self._incarnations.stop(child, why)

    # -- deciding -------------------------------------------------------------------------

    def _exited(self, child: Child, reason: ExitReason, failure: str | None) -> None:
        """Act on one exit (synchronous: decisions never wait; restarts run as tasks)."""
        if self.state is SupervisorState.STARTING:
            # Invariant: an exit seen while later children are still starting is acted
            # on (once) as soon as the supervisor is RUNNING, not lost.
            self._early_exits.append((child, reason, failure))
            return
        self._incarnations.discard(child, reason)
        child.last_exit = reason.value
        if reason.abnormal:
            child.last_failure = failure
        self._events.emit("exited", child.id, why=failure or reason.value, details={"reason": reason.value})
        if child.state in (ChildState.QUARANTINED, ChildState.HALTED):
            return  # kept as it is for the operator: never restarted behind their back
        child.state = ChildState.STOPPED
        if self.state is not SupervisorState.RUNNING:
            return
        plan = plan_restart(self.spec.flags.strategy, [c.view() for c in self._children.values()], child.id, reason)
        if not plan.restart:
            for cid in plan.remove:
                self._children.pop(cid, None)
            return
        now = self._clock()
        flags = self.spec.flags
        ok, self._restarts = add_restart(self._restarts, now, flags.period, flags.intensity)
        if not ok:
            self._tasks.spawn(self._escalate(f"more than {flags.intensity} restart(s) in {flags.period}s; "
                                             f"last: {child.id} ({reason.value}: {failure or ''})"))
            return
        child.consecutive = consecutive_failures(flags.backoff, child.consecutive, child.started_at, now)
        delay = restart_delay(flags.backoff, child.consecutive, self._rng.random())
        child.state = ChildState.RESTARTING
        self._events.emit("restarting", child.id, why=reason.value,
                          details={"delay": round(delay, 4), "stop": list(plan.stop), "start": list(plan.start)})
        self._tasks.spawn(self._restart(plan, delay))

    async def _restart(self, plan: Plan, delay: float) -> None:
        await asyncio.sleep(delay)  # holds nothing: a stop meanwhile wins
        async with self._restart_lock:
            for cid in plan.stop:
                c = self._children.get(cid)
                if c is not None and c.running and self.state is SupervisorState.RUNNING:
                    await self._incarnations.stop(c, f"restart of {plan.start[0] if plan.start else '?'} ({plan})")
            for cid in plan.remove:
                self._children.pop(cid, None)
            for cid in plan.start:
                c = self._children.get(cid)
                if self.state is not SupervisorState.RUNNING:
                    return
                if c is None or c.running or c.state in (ChildState.QUARANTINED, ChildState.HALTED):
                    continue
                try:
                    await self._start_child(c)
                except ChildStartError as exc:
                    self._events.emit("restart_failed", c.id, why=exc.message)
                    # Counts toward the intensity and is retried by the same path, after this plan.
                    self._exited(c, ExitReason.START_FAILED, exc.message)
                    return
                c.restarts += 1
                self._events.emit("restarted", c.id, details={"incarnation": c.incarnation, "restarts": c.restarts})

    async def _escalate(self, why: str) -> None:
        if self.state is not SupervisorState.RUNNING:
            return
        self.state = SupervisorState.STOPPING
        self._escalation = why
        await self._stop_children(f"escalation: {why}")
        self._spares.kill_all()
        if self.root:
            self.state = SupervisorState.QUARANTINED
            for c in self._children.values():
                c.state = ChildState.QUARANTINED
            self._events.emit("quarantined", None, why=why)
        else:
            self.state = SupervisorState.ESCALATED
            self._events.emit("escalated", None, why=why)
            self._done.set()



RemoteSupervisor = ray.remote(SupervisorActor)


async def start_all(children: list[Child], limit: int, start: Callable[[Child], Awaitable[None]]) -> None:
    """``start`` each child, ``limit`` at a time (1: one after another, in order); once none is starting,
    raise the first ChildStartError (or other failure) of any."""
    if limit == 1:
        for child in children:
            await start(child)
        return
    gate = asyncio.Semaphore(limit)

    async def one(child: Child) -> None:
        async with gate:
            await start(child)

    outcomes = await asyncio.gather(*(one(c) for c in children), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        raise next((f for f in failed if isinstance(f, ChildStartError)), failed[0])
