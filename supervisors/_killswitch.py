"""Operators' switches: halt and unhalt (the kill switch), quarantine and release.

A halted agent runs no handler from then on (new messages are refused with
``AgentNotRunning``), sends nothing more from its outbox, takes a final
checkpoint and keeps its state, journal and dead letters; its process stays up
for inspection.  A halted supervisor restarts nothing.  A quarantined agent
refuses messages (kept as dead letters) and keeps its state; its supervisor
neither probes nor restarts it.  Halt and quarantine are recorded in the
agent's state, so they outlive a restart; ``unhalt`` and ``release`` lift
them.  Every action is recorded with who took it and why (in the agent's
operator log, and as a supervisor event when it goes through one), and sent to
the notifiers.

These are the functions behind ``garrison kill | unhalt | quarantine |
release`` (the CLI is wired elsewhere)::

    halt("alice@ops", "runaway spend", agent="trader-7")          # one agent
    halt("alice@ops", "bad deploy", supervisor="billing")         # a subtree
    halt("alice@ops", "incident 4312", everything=True)           # the namespace
    unhalt("alice@ops", "fixed in v2", supervisor="billing")      # lift it again
    quarantine("dave", "odd replies", agent="trader-7", supervisor="billing")
    release("dave", "replies checked", agent="trader-7", supervisor="billing")

``agent`` with ``supervisor``: through that supervisor, which adjusts what it
does for the child (never restarts a halted one, stops probing a quarantined
one).  ``agent`` alone: straight to the agent's host (an unsupervised agent,
or when its supervisor is unknown).  ``supervisor`` alone: its whole subtree
(for ``release``: a root quarantined by exceeding its restart intensity).
``everything``: every agent and supervisor in ``namespace``.
"""

from __future__ import annotations

from typing import Any

import ray

from audit import OperatorKey
from runtime import NAMESPACE, AgentRef, host_of, live_ids
from runtime._gatekeeper import credential_for

from ._notifier import Event, LogNotifier, Notifier, notify_all
from ._ref import SupervisorRef
from .exceptions import SpecError

__all__ = ["halt", "quarantine", "release", "unhalt"]

Notifiers = list[Notifier] | tuple[Notifier, ...]
#: Who acts: their key (signs each call), or, without an operators file, a name.
Who = OperatorKey | str
#: The notifiers an operator's action is sent to unless told otherwise: the log.
_LOG: Notifiers = (LogNotifier(),)


def halt(
    who: Who,
    why: str,
    *,
    agent: str | None = None,
    supervisor: str | None = None,
    everything: bool = False,
    namespace: str = NAMESPACE,
    notifiers: Notifiers = _LOG,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Pull the kill switch (see module docstring); returns what was halted, per actor name.

    Exactly one target must be given: ``agent`` (optionally with its
    ``supervisor``), ``supervisor``, or ``everything``.
    """
    _check(who, why, "a kill switch")
    return _switch("halt", "halted", who, why, agent, supervisor, everything, namespace, notifiers, timeout)


def unhalt(
    who: Who,
    why: str,
    *,
    agent: str | None = None,
    supervisor: str | None = None,
    everything: bool = False,
    namespace: str = NAMESPACE,
    notifiers: Notifiers = _LOG,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Lift the kill switch (targets as :func:`halt`); returns what was unhalted, per actor name.

    Each agent resumes from its state (an agent halted while quarantined goes
    back to its quarantine); the record of who lifted it and why is kept in
    the agent's operator log.
    """
    _check(who, why, "lifting a kill switch")
    # Agents and supervisors both have ``unhalt(who, why)``; with ``everything``, a
    # supervisor that is not halted says so in its entry, and its children are lifted anyway.
    return _switch("unhalt", "unhalted", who, why, agent, supervisor, everything, namespace, notifiers, timeout)


def _switch(method: str, kind: str, who: Who, why: str, agent: str | None, supervisor: str | None,
            everything: bool, namespace: str, notifiers: Notifiers, timeout: float) -> dict[str, Any]:
    """Call ``method(who, why)`` on the one target of a kill switch's action, then notify ``kind``."""
    _one_target(agent, supervisor, everything)
    if supervisor is not None:
        call = getattr(SupervisorRef.lookup(supervisor, namespace=namespace), method)
        target = f"{supervisor}/{agent}" if agent else supervisor
        results = {target: call(who, why, child=agent, timeout=timeout)}
    elif agent is not None:
        results = _call_actors([agent], method, who, why, namespace, timeout)
        target = agent
    else:
        results = _call_actors(live_ids(namespace=namespace), method, who, why, namespace, timeout)
        target = f"namespace {namespace}"
    notify_all(tuple(notifiers), Event(kind, "kill-switch", target, _name(who), why,
                                       details={"targets": sorted(results)}))
    return results


def quarantine(
    who: Who,
    why: str,
    *,
    agent: str,
    supervisor: str | None = None,
    namespace: str = NAMESPACE,
    notifiers: Notifiers = _LOG,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Quarantine one agent (through its ``supervisor`` if given); returns its status (or its child entry)."""
    _check(who, why, "a quarantine")
    if not agent:
        raise SpecError("a quarantine needs the agent to quarantine (agent=...)")
    if supervisor is not None:
        result = SupervisorRef.lookup(supervisor, namespace=namespace).quarantine(agent, who=who, why=why,
                                                                                  timeout=timeout)
        target = f"{supervisor}/{agent}"
    else:
        result = _agent(agent, namespace).admin.quarantine(who, why)
        target = agent
    notify_all(tuple(notifiers), Event("quarantined", "operator", target, _name(who), why))
    return result


def release(
    who: Who,
    why: str,
    *,
    agent: str | None = None,
    supervisor: str | None = None,
    namespace: str = NAMESPACE,
    notifiers: Notifiers = _LOG,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Lift a quarantine: one agent's (through its ``supervisor`` if given), or a quarantined supervisor's.

    Returns the agent's status, the child's entry, or the supervisor's status.
    """
    _check(who, why, "a release")
    if not (agent or supervisor):
        raise SpecError("give what to release: agent= (optionally with supervisor=), or supervisor=")
    if supervisor is not None:
        result = SupervisorRef.lookup(supervisor, namespace=namespace).release(agent, who=who, why=why,
                                                                               timeout=timeout)
        target = f"{supervisor}/{agent}" if agent else supervisor
    else:
        assert agent is not None
        result = _agent(agent, namespace).admin.release(who, why)
        target = agent
    notify_all(tuple(notifiers), Event("released", "operator", target, _name(who), why))
    return result


def _agent(agent_id: str, namespace: str) -> AgentRef:
    """A ref to the agent's current host (AgentNotFound if none): its errors arrive as ours."""
    return AgentRef(agent_id, host_of(agent_id, namespace=namespace), namespace=namespace)


def _name(who: Who) -> str:
    return who.name if isinstance(who, OperatorKey) else who


def _check(who: Who, why: str, what: str) -> None:
    if not who or not why:
        raise SpecError(f"{what} needs who does it and why (both are recorded and notified)")


def _one_target(agent: str | None, supervisor: str | None, everything: bool) -> None:
    if everything == bool(agent or supervisor):
        raise SpecError("give exactly one target: agent=, supervisor= (optionally with agent=) or everything=True")


def _call_actors(names: list[str], action: str, who: Who, why: str, namespace: str,
                 timeout: float) -> dict[str, Any]:
    """An operator's ``action`` on each named actor (agent hosts and supervisors), at once; per name, its answer.

    Each actor admits the call itself (``operate``): ``who`` signs one credential per actor.

    An actor that is gone, not one of ours, or raises gets ``{"error": ...}``
    in its entry, so one bad target does not hide what happened to the rest.
    """
    pending: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name in names:
        try:
            pending[name] = host_of(name, namespace=namespace).operate.remote(
                action, credential_for(who, action, name), {"why": why, "child": None})
        except Exception as exc:  # gone meanwhile, or not one of ours
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name, ref in pending.items():
        try:
            results[name] = ray.get(ref, timeout=timeout)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    return results
