"""Intervention hooks: system-wide policy on every message and every action.

A hook is a function of one event, a :class:`MessageEvent` (before a
handler sees the message) or an :class:`ActionEvent` (before the gateway
decides on the action), answering an :class:`Intervention` (or None, which
allows).  For policy that is not per action: "no refunds on Sundays", "strip
card numbers from every message", "hold everything from this sender".

========  ====================================================================
ALLOW     go on
MODIFY    go on with ``replacement`` (a message or action of the hook's making)
DROP      a message is refused (``dropped`` dead letter; an ask gets the error);
          an action is ``refused``
HOLD      a message is set aside as a ``held`` dead letter (an operator's
          replay passes the hooks again); an action waits for human approval
          whatever its risk class (a prohibited one stays refused)
========  ====================================================================

:func:`intervene` applies hooks in order: the first DROP or HOLD wins, a
MODIFY hands its replacement to the next hook.  Hooks run on the agent's
handling thread, so they must be quick and deterministic; one that raises
counts as DROP (fail closed), with the error as the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ActionEvent", "Intervention", "InterventionKind", "MessageEvent", "intervene"]


class InterventionKind(enum.Enum):
    ALLOW = "allow"
    MODIFY = "modify"
    DROP = "drop"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Intervention:
    """What a hook decided (see module docstring)."""

    kind: InterventionKind
    reason: str = ""
    replacement: Any = None

    @classmethod
    def allow(cls) -> Intervention:
        return cls(InterventionKind.ALLOW)

    @classmethod
    def modify(cls, replacement: Any, reason: str = "") -> Intervention:
        return cls(InterventionKind.MODIFY, reason, replacement)

    @classmethod
    def drop(cls, reason: str) -> Intervention:
        return cls(InterventionKind.DROP, reason)

    @classmethod
    def hold(cls, reason: str) -> Intervention:
        return cls(InterventionKind.HOLD, reason)


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A message about to be handled by ``agent_id``."""

    agent_id: str
    sender: str | None
    message: Any


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """An action ``agent_id``'s handler asked for, under idempotency ``key``."""

    agent_id: str
    key: str
    action: Any


Hook = Callable[[Any], Intervention | None]


def intervene(hooks: Iterable[Hook], event: MessageEvent | ActionEvent) -> tuple[Intervention, Any]:
    """Run ``hooks`` on ``event``: the deciding intervention and the (possibly replaced) subject."""
    subject = event.message if isinstance(event, MessageEvent) else event.action
    modified: Intervention | None = None
    for hook in hooks:
        try:
            answer = hook(event)
        except Exception as exc:  # noqa: BLE001 - a failing hook fails closed
            return Intervention.drop(f"intervention hook {getattr(hook, '__name__', hook)!r} raised "
                                     f"{type(exc).__name__}: {exc}"), subject
        if answer is None or answer.kind is InterventionKind.ALLOW:
            continue
        if answer.kind is InterventionKind.MODIFY:
            subject = answer.replacement
            event = (replace(event, message=subject) if isinstance(event, MessageEvent)
                     else replace(event, action=subject))
            modified = answer
            continue
        return answer, subject
    return modified or Intervention.allow(), subject
