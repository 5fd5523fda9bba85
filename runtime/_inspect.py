"""``garrison inspect ID``: what an operator looks at first about one agent, gathered in one call.

Read-only, answered off the handling thread (the host's control group): the
agent's status, its configuration, its newest state transitions and its
restore history.  Nothing here changes the agent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["config_view", "inspection"]

#: Transition records are read a page past the newest ``n`` seqs: one commit can hold several.
_PAGE = 1000


def config_view(config: Any) -> dict[str, Any]:
    """The agent's ``AgentConfig`` as plain data; a field JSON cannot hold (a callable, a policy object) by repr."""
    out: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        try:
            out[name] = config.model_dump(mode="json", include={name})[name]
        except Exception:  # noqa: BLE001 - what pydantic cannot serialise is shown, not fatal
            out[name] = repr(value)
    return out


def inspection(core: Any, transitions: int) -> dict[str, Any]:
    """Status, config, the newest ``transitions`` transitions (oldest first) and the restore history of ``core``."""
    status = core.status()
    seq = int(status.get("seq") or 0)
    recent = core.transition_log.read(max(0, seq - transitions), max(_PAGE, 10 * transitions)) if transitions else []
    return {
        "status": status,
        "config": config_view(core.config),
        "transitions": recent[-transitions:] if transitions else [],
        "restores": core.restore_history(),
    }
