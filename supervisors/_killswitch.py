"""The kill switch: halt one agent, a subtree, or everything in a namespace, now.

A halted agent runs no handler from then on (new messages are refused with
``AgentNotRunning``), sends nothing more from its outbox, takes a final
checkpoint and keeps its state, journal and dead letters; its process stays up
for inspection.  A halted supervisor restarts nothing.  Every halt is
recorded with who pulled it and why, and sent to the notifiers.

This is the function behind ``garrison kill`` (the CLI is wired elsewhere)::

    halt("alice@ops", "runaway spend", agent="trader-7")          # one agent
    halt("alice@ops", "bad deploy", supervisor="billing")         # a subtree
    halt("alice@ops", "incident 4312", everything=True)           # the namespace
"""

from __future__ import annotations

from typing import Any

import ray

from runtime import NAMESPACE, host_of, live_ids

from ._notifier import Event, LogNotifier, Notifier, notify_all
from ._ref import SupervisorRef
from .exceptions import SpecError

__all__ = ["halt"]


def halt(
    who: str,
    why: str,
    *,
    agent: str | None = None,
    supervisor: str | None = None,
    everything: bool = False,
    namespace: str = NAMESPACE,
    notifiers: list[Notifier] | tuple[Notifier, ...] = (LogNotifier(),),
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Pull the kill switch (see module docstring); returns what was halted, per actor name.

    ``agent`` with ``supervisor``: through that supervisor, which then never
    restarts the agent.  ``agent`` alone: straight to the agent's host (for an
    unsupervised agent, or when its supervisor is unknown).  ``supervisor``
    alone: its whole subtree.  ``everything``: every agent and supervisor in
    ``namespace``.  Exactly one target must be given.
    """
    if not who or not why:
        raise SpecError("a kill switch needs who pulls it and why")
    if everything == bool(agent or supervisor):
        raise SpecError("give exactly one target: agent=, supervisor= (optionally with agent=) or everything=True")
    if supervisor is not None:
        result = SupervisorRef.lookup(supervisor, namespace=namespace).halt(who, why, child=agent, timeout=timeout)
        target = f"{supervisor}/{agent}" if agent else supervisor
        results = {target: result}
    elif agent is not None:
        results = _halt_actors([agent], who, why, namespace, timeout)
        target = agent
    else:
        names = live_ids(namespace=namespace)
        results = _halt_actors(names, who, why, namespace, timeout)
        target = f"namespace {namespace}"
    notify_all(tuple(notifiers), Event("halted", "kill-switch", target, who, why,
                                       details={"targets": sorted(results)}))
    return results


def _halt_actors(names: list[str], who: str, why: str, namespace: str, timeout: float) -> dict[str, Any]:
    """Call ``halt(who, why)`` on each named actor (agent hosts and supervisors both have it), at once."""
    pending: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name in names:
        try:
            pending[name] = host_of(name, namespace=namespace).halt.remote(who, why)
        except Exception as exc:  # gone meanwhile, or not one of ours
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name, ref in pending.items():
        try:
            results[name] = ray.get(ref, timeout=timeout)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    return results
