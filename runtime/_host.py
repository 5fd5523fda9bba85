"""The Ray actor that hosts one agent: a thin shell around :class:`AgentCore`.

Ray gives the process, the name and the restarts (``max_restarts=-1``: Ray
re-runs the constructor after a crash, which restores the state by itself).

A host started without a spec is a warm-standby *spare*: a process with Ray
and the runtime loaded that hosts nothing until ``adopt(spec)``; then it
restores that agent and records itself in the agent directory
(``_directory``), which is how callers find an agent whose host is not
named after it.

It is a threaded (not async) actor: a plain method call is Ray's cheapest
path.  Concurrency groups keep concerns apart:

``default`` (1 thread)  messages, batches, start, stop: one at a time, in order.
``control`` (2 threads) status, probe, checkpoint, introspection: they answer
                        while a handler is busy or stuck.
``watch``   (16 threads) ``watch`` calls that stay pending until the agent stops.

Invariants: every actor method returns an encoded reply or raises a Garrison
error (``_boundary.guarded``).  The constructor never raises for a start that
failed (a class the worker cannot import, a constructor or restore that
raises): Ray would restart the actor for ever (``max_restarts=-1``).  It keeps
the failure instead; ``ready`` raises it, ``probe`` and the repr say "failed",
and ``System.spawn`` kills the actor, so no host is left restarting.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
from typing import Any

import logging

import ray

from audit import AccessDenied

from . import _directory
from ._boundary import guarded, start_failed
from ._core import AgentCore
from ._export import RayExport
from ._logs import LogContext, configure_logs
from ._feedback import FeedbackDesk
from ._gatekeeper import RUNTIME
from ._inspect import inspection
from ._ref import AgentRef
from ._spec import HostSpec
from ._worker_log import read_worker_log
from .exceptions import AgentAlreadyRunning, AgentNotRunning, AgentStartError

__all__ = ["CONTROL", "WATCH", "AgentHost", "RemoteAgentHost", "lookup_agent"]

log = logging.getLogger("garrison.host")

CONTROL = "control"
WATCH = "watch"
#: Seconds ``stop`` waits for pending watch calls to return before it answers.
WATCHERS_DRAIN = 10.0


def lookup_agent(agent_id: str, *, namespace: str, sender: str | None, epoch: int | None = None) -> AgentRef:
    handle = _directory.resolve(agent_id, namespace=namespace)
    return AgentRef(agent_id, handle, namespace=namespace, sender=sender, epoch=epoch)


#: What an operator can do to one agent through ``ref.admin`` (each needs a role: ``audit.GRANTS``).
AGENT_ACTIONS = frozenset({"halt", "unhalt", "quarantine", "release", "review", "reset_breaker", "annotate"})


class AgentHost:
    """One agent per actor (or none yet: a spare).  The dashboard shows its name and repr."""

    def __init__(self, spec: HostSpec | None, namespace: str, core: AgentCore | None = None) -> None:
        if core is None:  # (``core``: one a packed host opened, ``_packed``: this object, not its process)
            # This process hosts one agent.  Handling allocates many short-lived objects and few
            # cycles: collect the young generation less often, keep what start-up built out of it.
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        self._namespace = namespace
        self._spec = spec
        self.core: AgentCore | None = core
        self._export: RayExport | None = None  # the agent's metrics into Ray's (``_export``)
        #: Pending ``watch`` calls (monitors, supervisors); ``stop`` lets them answer before it does.
        self._watchers = 0
        self._watchers_done = threading.Condition()
        #: Why this host could not start its agent (see the module invariants).
        self.start_failure: AgentStartError | None = None
        if spec is not None and core is None:
            try:
                self._host(spec)
            except AgentStartError as exc:
                self.start_failure = exc
                log.error("agent %s failed to start: %s", spec.agent_id, exc.message)

    def _host(self, spec: HostSpec) -> None:
        """Build and start ``spec``'s agent here; AgentStartError naming the cause if that fails."""
        self._spec = spec
        try:
            self._build(spec)
        except Exception as exc:
            self.core = None
            raise start_failed(spec.agent_id, exc) from exc

    def _build(self, spec: HostSpec) -> None:
        logs = LogContext(spec.agent_id)  # first: the restore's own lines are structured too
        configure_logs(logs, fmt=spec.config.log_format, level=spec.config.log_level)
        core = AgentCore(spec, resolve=functools.partial(_directory.resolve, namespace=self._namespace),
                         lookup=functools.partial(lookup_agent, namespace=self._namespace))
        logs.incarnation = core.incarnation
        self.core = core
        # Start now, not at the first message: after a crash Ray re-runs this
        # constructor and nobody else calls, yet the outbox must resume.
        core.ensure_started()
        # Registered after the restore and only while not fenced: the record
        # always names the newest incarnation that got this far.
        core.fence.check("registration")
        _directory.register(spec.agent_id, ray.get_runtime_context().get_actor_name() or spec.agent_id,
                            core.epoch, namespace=self._namespace)
        log.info("agent %s (%s) incarnation %d serving, epoch %d, restored from %s", spec.agent_id,
                 spec.class_path, core.incarnation, core.epoch, core.restore_report.source)
        core.metrics.watch(core.status, core.agent.gauges)
        self._export = RayExport(core.metrics.registry, tags={"agent_class": spec.class_path})
        self._export.start()

    @guarded
    def adopt(self, spec: HostSpec) -> dict[str, Any]:
        """A spare takes over ``spec.agent_id``: restore its state, serve, and record itself as its host."""
        if self.core is not None:
            raise AgentAlreadyRunning(
                f"this host already hosts {self.core.agent_id!r}; a spare adopts one agent",
                agent_id=spec.agent_id)
        self._host(spec)
        assert self.core is not None
        return self.core.status()

    def _core(self) -> AgentCore:
        if self.core is None and self.start_failure is not None:
            raise self.start_failure
        if self.core is None:
            raise AgentNotRunning("this host is a spare: it hosts no agent until one is adopted", state="spare")
        return self.core

    def __repr__(self) -> str:
        core = getattr(self, "core", None)
        if self._spec is None:
            return "Agent(spare)"
        name = self._spec.class_path.rpartition(":")[2]
        if core is None:
            return f"Agent({self._spec.agent_id}, {name}, {'failed' if self.start_failure else 'starting'})"
        return (
            f"Agent({core.agent_id}, {name}, "
            f"incarnation={core.incarnation}, state={core.lifecycle.name})"
        )

    @guarded
    def deliver(self, raw: bytes) -> bytes:
        return self._core().deliver(raw)

    @guarded
    def deliver_batch(self, blob: bytes) -> bytes:
        return self._core().deliver_batch(blob)

    @guarded
    def ready(self) -> dict[str, Any]:
        self._core().ensure_started()
        return self._core().status()

    @guarded
    def stop(self) -> dict[str, Any]:
        if self.core is None:
            return {"state": "stopped", "spare": True}
        # Forget first: once the core has stopped, a supervisor watching it may
        # kill this process at any moment.
        _directory.forget(self.core.agent_id, ray.get_runtime_context().get_actor_name() or self.core.agent_id,
                          namespace=self._namespace)
        status = self.core.stop()
        if self._export is not None:
            self._export.stop()  # its last copy: the state the agent stopped in
        # Every pending watch returns "stopped" before this returns: whoever called stop() kills the
        # process once it has this answer, and a watcher that lost that race would hear "crashed"
        # (it did, on a loaded machine).  Bounded: a watcher thread that never runs is not waited on.
        with self._watchers_done:
            self._watchers_done.wait_for(lambda: self._watchers == 0, timeout=WATCHERS_DRAIN)
        return status

    @guarded
    def replay_dead_letters(self, ids: list[str] | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        return self._core().replay_dead_letters(ids, reason)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def status(self) -> dict[str, Any]:
        # "nice": the process's nice value; above 0, anything CPU-bound at normal priority on the
        # node starves this agent (Ray's default for workers is 15; see ``EMBEDDED_RAY_CONFIG``).
        return {**self._core().status(), "nice": os.nice(0)}

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def describe(self) -> str:
        """The repr the dashboard and Ray's log prefixes use."""
        return repr(self)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def probe(self) -> dict[str, Any]:
        """Liveness, answered off the handling thread: a busy agent still answers."""
        if self.core is None and self.start_failure is not None:
            return {"state": "failed", "pid": os.getpid(), "handler_running_for": None,
                    "failure": self.start_failure.message}
        if self.core is None:
            return {"state": "spare", "pid": os.getpid(), "handler_running_for": None}
        return self.core.probe()

    @ray.method(concurrency_group=WATCH)
    @guarded
    def watch(self) -> dict[str, Any]:
        """Pending until the agent stops; fails with Ray's actor error if the process dies.

        A monitor holds one of these per agent: crash detection without polling.
        """
        # The final status was taken by stop() itself, which waits for this to return
        # before it answers (and whoever called it kills the process).
        with self._watchers_done:
            self._watchers += 1
        try:
            return self._core().stopped.result()
        finally:
            with self._watchers_done:
                self._watchers -= 1
                self._watchers_done.notify_all()

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def checkpoint(self, force: bool = True) -> dict[str, Any] | None:
        return self._core().checkpoint(force=force)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def inspect(self, transitions: int = 20) -> dict[str, Any]:
        return inspection(self._core(), transitions)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def logs(self, offset: int | None = None, limit: int = 200) -> dict[str, Any]:
        return read_worker_log(offset, limit)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def restore_history(self) -> list[dict[str, Any]]:
        return self._core().restore_history()

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def transitions(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return self._core().transition_log.read(after_seq, limit)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def dead_letters(self, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self._core().dead_letters(reason, limit)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def record_dead_letters(self, reason: str, raws: list[bytes], why: str, uncounted: int = 0) -> int:
        """Letters a sender gave up delivering here (a driver's held-tell overflow), recorded as dead letters."""
        return self._core().record_dead_letters(reason, raws, why, uncounted)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def metrics(self) -> str:
        return self._core().metrics.text()

    # -- supervisors: quarantine and kill switch (see supervisors/) ---------------------
    # The runtime's own path: a supervisor's policy, or an operator's call a supervisor admitted
    # (``auth`` says which).  Operators reach this agent through ``operate``.

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def quarantine(self, why: str, who: str = "supervisor", auth: str = RUNTIME) -> dict[str, Any]:
        return self._core().quarantine(why, who, auth=auth)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def release(self, who: str = "operator", why: str = "", auth: str = RUNTIME) -> dict[str, Any]:
        return self._core().release(who, why, auth=auth)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def halt(self, who: str, why: str, auth: str = RUNTIME) -> dict[str, Any]:
        return self._core().halt(who, why, auth=auth)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def unhalt(self, who: str, why: str = "", auth: str = RUNTIME) -> dict[str, Any]:
        return self._core().unhalt(who, why, auth=auth)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def record_operation(self, action: str, who: str, why: str, auth: str = RUNTIME) -> None:
        """An operator's action its supervisor carried out (a deploy, a rollback), into the operator log."""
        self._core().record_operation(action, who, why, auth)

    # -- operators (``ref.admin``) -----------------------------------------------------

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def operate(self, action: str, who: Any, args: dict[str, Any]) -> dict[str, Any]:
        """An operator's ``action`` with ``args``, once ``who`` is admitted for it (``_gatekeeper``).

        ``who`` is a credential (a dict :meth:`audit.Credential.to_dict` made) or, in a
        deployment without an operators file, a name.  Returns the agent's status, or
        what the action returns (a review's count left, a breaker's status, an annotation).
        """
        core = self._core()
        if action not in AGENT_ACTIONS:
            raise AccessDenied(f"{action!r} is not an operator action on an agent; one of {sorted(AGENT_ACTIONS)}",
                               check="action")
        me = core.gatekeeper.admit(action, who)
        match action:
            case "halt":
                return core.halt(me.name, args["why"], auth=me.auth)
            case "unhalt":
                return core.unhalt(me.name, args.get("why", ""), auth=me.auth)
            case "quarantine":
                return core.quarantine(args["why"], me.name, auth=me.auth)
            case "release":
                return core.release(me.name, args.get("why", ""), auth=me.auth)
            case "review":
                return core.review_actions(me.name, args.get("count"), auth=me.auth)
            case "reset_breaker":
                return core.reset_breaker(args["name"], me.name, auth=me.auth)
            case _:  # annotate
                return self._feedback().annotate(args["decision"], args["label"], args.get("note", ""),
                                                 me.name, me.auth)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def operator_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._core().operator_log(limit)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def decisions(self, trace: str | None = None, since: float | None = None, until: float | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        audit = self._core().audit
        return [] if audit is None else audit.decisions(trace=trace, since=since, until=until, limit=limit)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def versions(self) -> list[dict[str, Any]]:
        audit = self._core().audit
        return [] if audit is None else audit.records("manifest", limit=0)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def feedback(self, limit: int = 0) -> list[dict[str, Any]]:
        return self._feedback().export(limit)

    def _feedback(self) -> FeedbackDesk:
        core = self._core()
        return FeedbackDesk(core.agent_id, core.audit, core.store)

    @ray.method(concurrency_group=CONTROL)
    @guarded
    def ledger(self, limit: int = 100, tag: str | None = None, in_doubt: bool = False) -> list[dict[str, Any]]:
        return self._core().gateway.ledger(limit=limit, tag=tag, in_doubt=in_doubt)  # reads only: no lock


RemoteAgentHost = ray.remote(concurrency_groups={CONTROL: 2, WATCH: 16})(AgentHost)
