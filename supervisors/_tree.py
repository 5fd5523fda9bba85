"""``garrison tree``: the supervision tree of a namespace, with each supervisor's and child's state.

:func:`assemble` is pure: from each live supervisor's status (``status()``:
state, strategy, children in start order) it nests child supervisors under
their parents and returns the roots, then the agents no supervisor owns.
:func:`look` is the part that reaches the cluster.  A child supervisor that
is not live (restarting, or gone) appears as its parent sees it, without
children.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from runtime import NAMESPACE, live_ids

from ._ref import SupervisorRef
from .exceptions import SupervisorError

__all__ = ["assemble", "look"]

#: What a tree node keeps of a child entry (``which_children``).
_CHILD_FIELDS = ("id", "kind", "state", "incarnation", "pid", "restarts", "last_failure")


def _node(name: str, status: dict[str, Any], statuses: dict[str, dict[str, Any]], seen: set[str]) -> dict[str, Any]:
    seen.add(name)
    children = []
    for child in status.get("children", []):
        if child.get("kind") == "supervisor" and child["id"] in statuses and child["id"] not in seen:
            sub = _node(child["id"], statuses[child["id"]], statuses, seen)
            sub["restarts"] = child.get("restarts")  # as its parent counts them
            children.append(sub)
        else:
            children.append({k: child.get(k) for k in _CHILD_FIELDS})
    return {"id": name, "kind": "supervisor", "state": status.get("state"), "strategy": status.get("strategy"),
            "restarts_in_window": status.get("restarts_in_window"), "escalation": status.get("escalation"),
            "children": children}


def assemble(statuses: dict[str, dict[str, Any]], agents: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The forest: supervisors no other live supervisor lists as a child (by name), then ``agents`` none owns."""
    owned = {c["id"] for s in statuses.values() for c in s.get("children", [])}
    seen: set[str] = set()
    roots = [_node(name, statuses[name], statuses, seen) for name in sorted(statuses) if name not in owned]
    # A cycle of supervisors (none is a root; not one a real tree makes) is still shown, once.
    roots += [_node(name, statuses[name], statuses, seen) for name in sorted(statuses) if name not in seen]
    roots += [{"id": a, "kind": "agent", "state": None, "supervisor": None}
              for a in sorted(agents) if a not in owned and a not in statuses]
    return roots


def look(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The namespace's supervision forest now (see :func:`assemble`); unsupervised agents with their state."""
    statuses, agents, refs = {}, [], {}
    for name in live_ids(namespace=namespace):
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue  # gone since the listing
        if hasattr(handle, "which_children"):
            try:
                statuses[name] = SupervisorRef(name, handle).status()
            except SupervisorError:
                continue  # stopping or dead: its parent's entry (if any) still shows it
        else:
            agents.append(name)
            refs[name] = handle
    forest = assemble(statuses, agents)
    for node in forest:
        if node["kind"] == "agent":
            node["state"] = _agent_state(refs.get(node["id"]))
    return forest


def _agent_state(handle: Any) -> str | None:
    """An unsupervised agent's lifecycle state, or ``unreachable``."""
    if handle is None or not hasattr(handle, "probe"):
        return None
    try:
        return ray.get(handle.probe.remote(), timeout=5.0).get("state")
    except (RayError, GetTimeoutError):  # dead, or busy past the wait: shown, not raised
        return "unreachable"
