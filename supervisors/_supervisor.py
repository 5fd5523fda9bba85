"""The supervisor: a Ray actor that starts, watches, restarts and stops its children.

It is an async actor; every decision is made on its one event loop, so the
children's records need no locks.  Blocking work (spawning an agent, which
waits for it to be ready; notifying humans) runs in threads, so supervision
never stalls behind it: while a child restarts, the supervisor still answers
introspection, watches the other children and probes them.

Per child, per incarnation, two tasks:

* a *monitor* awaits the child's pending ``watch`` call.  It returns when the
  child stops gracefully (exit reason ``normal``) and fails with Ray's actor
  error when the process dies (``crash``): crash detection without polling.
  Children are spawned with ``max_restarts=0``, so only the supervisor
  restarts them.
* a *prober* (only with a :class:`ProbePolicy`) sends liveness probes with a
  deadline and judges them with :func:`judge_probe`; a suspect child is killed
  and restarted (exit reason ``hung``) or quarantined, per the policy.

Warm standby (``flags.standby``): the supervisor keeps that many spare hosts
started (processes with Ray and the runtime loaded, hosting nothing).  An
agent child is started by handing its spec to a spare when one is ready
(``adopt``: restore, serve, record itself in the agent directory), and the
spare is replaced in the background; with no spare ready, a child placed
otherwise than the spares (``ray_options``), or if the adoption fails, the
start is a cold one as before.

On an exit the supervisor asks :func:`plan_restart` what to do, counts the
restart with :func:`add_restart` (too many: escalate), waits the backoff
without holding anything, then, holding ``_restart_lock``, stops the plan's
running children in reverse start order and starts the plan's children in
start order.  A start that fails counts as another exit (``start_failed``), so
it is retried, within the intensity, by the same path.

Invariants:

* At most one restart plan is carried out at a time (``_restart_lock``); a
  stop or escalation takes the same lock, so it never interleaves with one.
* No child is started while the supervisor is not RUNNING (checked under the
  lock before each start); a stop therefore leaves nothing behind.
* ``Child.generation`` fences the monitor and prober of a replaced
  incarnation: each death is acted on once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from runtime import AgentAlreadyRunning, System

from ._backoff import consecutive_failures, restart_delay
from ._calls import DEATH_WAIT, await_death, awaitable, first_line
from ._child import Child
from ._intensity import add_restart
from ._lifecycle import ChildState, SupervisorState, require
from ._notifier import Event, Notifier, notify_all
from ._operations import Operations
from ._probing import Probing
from ._spec import ChildSpec, Strategy, SupervisorSpec
from ._standby import Standby, placement_key, spare_placement
from ._strategy import ExitReason, Plan, plan_restart
from .exceptions import ChildNotFound, ChildStartError, SpecError, SupervisorError

__all__ = ["RemoteSupervisor", "SupervisorActor"]

log = logging.getLogger("garrison.supervisor")

#: Seconds a spawn keeps retrying while the previous incarnation's name is still taken.
NAME_WAIT = 5.0
#: Events kept for introspection.
EVENT_LIMIT = 2000


class SupervisorActor(Operations, Probing, Standby):
    """One supervisor (see module docstring).  Create it with :func:`supervisors.start_supervisor`.

    Operators' calls (halt, quarantine, release, retire) are in ``_operations``,
    hang detection in ``_probing``, warm spares in ``_standby``.
    """

    def __init__(
        self,
        spec: SupervisorSpec,
        *,
        data_dir: str,
        checkpoint_dir: str,
        namespace: str,
        notifiers: tuple[Notifier, ...] = (),
        root: bool = True,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.name = spec.id
        self.root = root
        self.state = SupervisorState.STARTING
        self._namespace = namespace
        self._data_dir, self._checkpoint_dir = data_dir, checkpoint_dir
        self._system = System(data_dir, checkpoint_dir=checkpoint_dir, namespace=namespace)
        self._notifiers = tuple(notifiers)
        self._notify_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="garrison-notify")
        self._rng = random.Random(seed)
        self._clock = clock
        self._pool = spec.flags.strategy is Strategy.SIMPLE_ONE_FOR_ONE
        self._template: ChildSpec | None = spec.children[0] if self._pool else None
        # Invariant: insertion order is start order (the order plans use).
        self._children: dict[str, Child] = {} if self._pool else {c.id: Child(c) for c in spec.children}
        self._restarts: tuple[float, ...] = ()
        self._restart_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events: list[dict[str, Any]] = []
        self._event_count = 0
        self._done = asyncio.Event()
        self._escalation: str | None = None
        self._halted_by: tuple[str, str] | None = None
        self._early_exits: list[tuple[Child, ExitReason, str | None]] = []
        #: Warm spares ready to adopt an agent, and how many are being started.
        self._spares: list[Any] = []
        self._spares_starting = 0
        self._spare_options = spare_placement(list(spec.children))
        self._spare_key = placement_key(self._spare_options)

    # -- public calls --------------------------------------------------------------

    async def start(self) -> list[dict[str, Any]]:
        """Start the children in order; on a failure stop those started, in reverse, and raise ChildStartError."""
        require(self.state, (SupervisorState.STARTING,), "start", self.name)
        for child in list(self._children.values()):
            try:
                await self._start_child(child)
            except ChildStartError as exc:
                self.state = SupervisorState.FAILED
                self._emit("start_failed", child.id, why=exc.message)
                await self._stop_children(f"{child.id} failed to start")
                self._done.set()
                raise
        self.state = SupervisorState.RUNNING
        self._emit("running", None, why=f"{len(self._children)} children started")
        self._replenish_spares()
        early, self._early_exits = self._early_exits, []
        for child, reason, failure in early:
            self._exited(child, reason, failure)
        return self.which_children()

    def which_children(self) -> list[dict[str, Any]]:
        """Every child in start order: kind, state, incarnation, pid, restarts, last failure."""
        return [c.describe() for c in self._children.values()]

    def status(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "state": self.state.value,
            "root": self.root,
            "strategy": self.spec.flags.strategy.value,
            "restarts_in_window": len(self._restarts),
            "escalation": self._escalation,
            "spares": len(self._spares),
            "pid": os.getpid(),
            "children": self.which_children(),
        }

    def probe(self) -> dict[str, Any]:
        """Liveness, for a parent's prober: the event loop answered."""
        return {"state": self.state.value, "pid": os.getpid(), "handler_running_for": None}

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """Events with ``index >= after``, oldest first (the newest EVENT_LIMIT are kept)."""
        return [e for e in self._events if e["index"] >= after]

    async def watch(self) -> dict[str, Any]:
        """Pending until this supervisor is done; raises if it escalated (its parent then acts)."""
        await self._done.wait()
        if self._escalation is not None:
            raise SupervisorError(f"supervisor {self.name!r} escalated: {self._escalation}",
                                  supervisor=self.name)
        return self.status()

    async def stop(self, why: str = "stop requested") -> dict[str, Any]:
        """Stop every child in reverse start order (graceful, shutdown timeout, hard kill)."""
        if self.state is SupervisorState.STOPPED:
            return self.status()
        self.state = SupervisorState.STOPPING
        await self._stop_children(why)
        self._kill_spares()
        self.state = SupervisorState.STOPPED
        self._emit("stopped", None, why=why)
        self._done.set()
        return self.status()

    async def start_child(self, child_id: str, init: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add a child to a simple_one_for_one pool, from the template, and start it."""
        require(self.state, (SupervisorState.RUNNING,), "start a child", self.name)
        if self._template is None:
            raise SpecError(f"supervisor {self.name!r} is {self.spec.flags.strategy.value}: "
                            "only a simple_one_for_one pool starts children dynamically", supervisor=self.name)
        if child_id in self._children:
            raise SpecError(f"supervisor {self.name!r} already has a child {child_id!r}", supervisor=self.name)
        update: dict[str, Any] = {"id": child_id}
        if init is not None:
            update["init"] = init
        spec = ChildSpec(**{**self._template.model_dump(exclude={"shutdown"}), **update,
                            "shutdown": self._template.shutdown})
        child = self._children[child_id] = Child(spec)
        async with self._restart_lock:
            try:
                await self._start_child(child)
            except ChildStartError:
                del self._children[child_id]
                raise
        return child.describe()

    async def terminate_child(self, child_id: str, why: str = "terminated") -> dict[str, Any]:
        """Stop one child (graceful, then kill); a pool child is also removed."""
        child = self._child(child_id)
        async with self._restart_lock:
            if child.running:
                await self._stop_child(child, why)
            if self._pool:
                del self._children[child_id]
        return child.describe()

    # -- starting -------------------------------------------------------------------

    def _child(self, child_id: str) -> Child:
        try:
            return self._children[child_id]
        except KeyError:
            raise ChildNotFound(f"supervisor {self.name!r} has no child {child_id!r}",
                                supervisor=self.name, child=child_id) from None

    async def _start_child(self, child: Child) -> None:
        child.state = ChildState.STARTING
        child.generation += 1
        gen = child.generation
        spare = None
        try:
            if child.spec.is_supervisor:
                handle, info = await self._spawn_supervisor(child)
            else:
                spare = self._take_spare(child.spec)
                handle, info = await asyncio.to_thread(self._spawn_agent, child.spec, spare)
        except Exception as exc:
            child.state = ChildState.STOPPED
            child.last_failure = f"start failed: {first_line(exc)}"
            raise ChildStartError(
                f"supervisor {self.name!r}: child {child.id!r} failed to start: {first_line(exc)}",
                supervisor=self.name, child=child.id,
            ) from exc
        child.handle = handle
        child.incarnation = info.get("incarnation")
        child.epoch = info.get("epoch")
        child.pid = info.get("pid")
        child.started_at = self._clock()
        halted = child.state is ChildState.HALTED or self.state is SupervisorState.HALTED
        child.state = ChildState.RUNNING
        child.watch_ref = handle.watch.remote()
        child.tasks = [self._spawn_task(self._monitor(child, gen))]
        self._emit("started", child.id, details={"incarnation": child.incarnation, "epoch": child.epoch,
                                                 "pid": child.pid, "warm": spare is not None and handle is spare})
        if halted and self._halted_by is not None:
            # Invariant: a kill switch pulled while this child was being spawned still applies to it.
            await self._halt_child(child, *self._halted_by)
            return
        if not child.spec.is_supervisor and info.get("state") == "quarantined":
            # Its durable record says so (quarantined by an operator before it died):
            # kept as it is, neither probed nor restarted, until a release.
            child.state = ChildState.QUARANTINED
            child.last_failure = "came back quarantined (its record in the agent's state)"
            return
        self._start_prober(child, gen)

    def _spawn_agent(self, spec: ChildSpec, spare: Any = None) -> tuple[Any, dict[str, Any]]:
        """Blocking (runs in a thread): hand the agent to ``spare``, or spawn it (no Ray restarts); wait until ready."""
        if spare is not None:
            host_spec = self._system.host_spec(spec.agent, spec.id, config=spec.config, init=spec.init)
            try:
                self._system.adopt(spare, host_spec)
                return spare, ray.get(spare.probe.remote(), timeout=30)
            except Exception as exc:  # a dead or failing spare: fall back to a cold start
                log.warning("supervisor %s: spare could not adopt %s (%s); cold start", self.name, spec.id, exc)
                ray.kill(spare, no_restart=True)
        deadline = time.monotonic() + NAME_WAIT
        while True:
            try:
                self._system.spawn(spec.agent, spec.id, config=spec.config, init=spec.init, detached=False,
                                   ray_options={**spec.ray_options, "max_restarts": 0})
                break
            except AgentAlreadyRunning:
                # The previous incarnation's name is freed a moment after its death is reported.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        handle = ray.get_actor(spec.id, namespace=self._namespace)
        return handle, ray.get(handle.probe.remote(), timeout=30)

    async def _spawn_supervisor(self, child: Child) -> tuple[Any, dict[str, Any]]:
        sub = child.spec.supervisor
        assert sub is not None
        deadline = time.monotonic() + NAME_WAIT
        while True:
            try:
                handle = RemoteSupervisor.options(
                    name=sub.id, namespace=self._namespace, lifetime=None, max_restarts=0,
                    max_task_retries=0, num_cpus=0,
                ).remote(sub, data_dir=self._data_dir, checkpoint_dir=self._checkpoint_dir,
                         namespace=self._namespace, notifiers=self._notifiers, root=False)
                break
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        try:
            await handle.start.remote()
        except Exception:
            ray.kill(handle, no_restart=True)
            raise
        info = await handle.probe.remote()
        return handle, {"incarnation": child.restarts + 1, "pid": info["pid"]}

    # -- watching ---------------------------------------------------------------------

    async def _monitor(self, child: Child, gen: int) -> None:
        try:
            await child.watch_ref
            reason, failure = ExitReason.NORMAL, None
        except asyncio.CancelledError:
            raise
        except RayActorError as exc:
            reason, failure = ExitReason.CRASH, f"process died: {first_line(exc)}"
        except Exception as exc:  # a sub-supervisor that escalated
            reason, failure = ExitReason.CRASH, first_line(exc)
        if child.generation == gen:
            self._exited(child, reason, failure)

    # -- deciding -------------------------------------------------------------------------

    def _exited(self, child: Child, reason: ExitReason, failure: str | None) -> None:
        """Act on one exit (synchronous: decisions never wait; restarts run as tasks)."""
        if self.state is SupervisorState.STARTING:
            # Invariant: an exit seen while later children are still starting is acted
            # on (once) as soon as the supervisor is RUNNING, not lost.
            self._early_exits.append((child, reason, failure))
            return
        handle = child.handle
        self._retire(child)
        if handle is not None:
            # Stopped gracefully but still up, or dead: either way Ray keeps the name
            # taken until the actor is killed through a handle, so a restart could not reuse it.
            if reason is ExitReason.NORMAL:
                self._spawn_task(self._kill_after_stop(handle))
            else:
                ray.kill(handle, no_restart=True)
        child.last_exit = reason.value
        if reason.abnormal:
            child.last_failure = failure
        self._emit("exited", child.id, why=failure or reason.value, details={"reason": reason.value})
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
            self._spawn_task(self._escalate(
                f"more than {flags.intensity} restart(s) in {flags.period}s; last: {child.id} ({reason.value}: "
                f"{failure or ''})"
            ))
            return
        child.consecutive = consecutive_failures(flags.backoff, child.consecutive, child.started_at, now)
        delay = restart_delay(flags.backoff, child.consecutive, self._rng.random())
        child.state = ChildState.RESTARTING
        self._emit("restarting", child.id, why=reason.value,
                   details={"delay": round(delay, 4), "stop": list(plan.stop), "start": list(plan.start)})
        self._spawn_task(self._restart(plan, delay))

    async def _kill_after_stop(self, handle: Any) -> None:
        """Kill a child that stopped of its own accord once whoever stopped it has its answer.

        ``stop`` is idempotent and runs on the host's one handling thread, so
        this one returns after the first has answered; a restart meanwhile
        waits for the name (NAME_WAIT).
        """
        try:
            await asyncio.wait_for(awaitable(handle.stop.remote()), DEATH_WAIT)
        except Exception:
            pass  # already dead, or stuck: killed below either way
        ray.kill(handle, no_restart=True)

    async def _restart(self, plan: Plan, delay: float) -> None:
        await asyncio.sleep(delay)  # holds nothing: a stop meanwhile wins
        async with self._restart_lock:
            for cid in plan.stop:
                c = self._children.get(cid)
                if c is not None and c.running and self.state is SupervisorState.RUNNING:
                    await self._stop_child(c, f"restart of {plan.start[0] if plan.start else '?'} ({plan})")
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
                    self._emit("restart_failed", c.id, why=exc.message)
                    # Counts toward the intensity and is retried by the same path, after this plan.
                    self._exited(c, ExitReason.START_FAILED, exc.message)
                    return
                c.restarts += 1
                self._emit("restarted", c.id, details={"incarnation": c.incarnation, "restarts": c.restarts})

    async def _escalate(self, why: str) -> None:
        if self.state is not SupervisorState.RUNNING:
            return
        self.state = SupervisorState.STOPPING
        self._escalation = why
        await self._stop_children(f"escalation: {why}")
        self._kill_spares()
        if self.root:
            self.state = SupervisorState.QUARANTINED
            for c in self._children.values():
                c.state = ChildState.QUARANTINED
            self._emit("quarantined", None, why=why)
        else:
            self.state = SupervisorState.ESCALATED
            self._emit("escalated", None, why=why)
            self._done.set()

    # -- stopping -------------------------------------------------------------------------

    def _retire(self, child: Child) -> None:
        """Fence off the live incarnation's monitor and prober (see ``Child.generation``)."""
        child.generation += 1
        current = asyncio.current_task()
        for task in child.tasks:
            if task is not current:
                task.cancel()
        child.tasks = []
        child.handle = child.watch_ref = None
        child.pid = None

    async def _stop_children(self, why: str) -> None:
        async with self._restart_lock:
            for child in reversed(list(self._children.values())):
                if child.running:
                    await self._stop_child(child, why)

    async def _stop_child(self, child: Child, why: str) -> None:
        """Graceful stop within the child's shutdown timeout, then a hard kill; waits for the death."""
        handle, watch_ref = child.handle, child.watch_ref
        self._retire(child)
        timeout = None if math.isinf(child.spec.shutdown) else child.spec.shutdown
        graceful = True
        try:
            await asyncio.wait_for(awaitable(handle.stop.remote(why) if child.spec.is_supervisor
                                              else handle.stop.remote()), timeout)
        except (asyncio.TimeoutError, Exception):
            graceful = False
        ray.kill(handle, no_restart=True)
        await await_death(watch_ref)
        child.state = ChildState.STOPPED
        child.last_exit = ExitReason.SHUTDOWN.value
        self._emit("stopped" if graceful else "killed", child.id, why=why,
                   details={"shutdown": child.spec.shutdown})

    async def _kill(self, child: Child) -> None:
        handle, watch_ref = child.handle, child.watch_ref
        self._retire(child)
        if handle is not None:
            ray.kill(handle, no_restart=True)
            await await_death(watch_ref)
        self._emit("killed", child.id, why="hard kill")

    # -- bookkeeping ------------------------------------------------------------------------

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor %s: task failed", self.name, exc_info=task.exception())
            self._emit("internal_error", None, why=first_line(task.exception()))

    def _emit(self, kind: str, child: str | None, *, who: str = "supervisor", why: str = "",
              details: dict[str, Any] | None = None) -> None:
        event = Event(kind, self.name, child, who, why, details=dict(details or {}))
        self._event_count += 1
        self._events.append({"index": self._event_count - 1, **event.to_dict()})
        del self._events[:-EVENT_LIMIT]
        if self._notifiers:
            self._notify_pool.submit(notify_all, self._notifiers, event)


RemoteSupervisor = ray.remote(SupervisorActor)
