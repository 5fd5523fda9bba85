"""Loading an agent's intervention hooks (``AgentConfig.interventions``) and applying them to messages.

Hooks are named by import path, ``"package.module:function"``, so a config
stays data that travels to every worker; each host imports them when it
starts (a path that does not import fails the start with ``AgentStartError``,
like an agent class the workers cannot import).  What they answer is
:mod:`governance._intervention`'s; the gateway applies them to actions, and
:class:`MessageHooks` to messages before their handler.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from governance import InterventionKind, MessageEvent, intervene

from .exceptions import ConfigError, MessageDropped, MessageHeld

__all__ = ["MessageHooks", "load_hooks"]


def load_hooks(paths: Sequence[str]) -> tuple[Callable[[Any], Any], ...]:
    """Import each ``"module:function"``; ConfigError naming the one that does not import."""
    hooks = []
    for path in paths:
        module, _, name = path.partition(":")
        try:
            hook = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"intervention hook {path!r} cannot be imported here: {type(exc).__name__}: {exc}; "
                              "ship its module with the agents (runtime_env working_dir or py_modules)",
                              hook=path) from exc
        if not callable(hook):
            raise ConfigError(f"intervention hook {path!r} is not callable", hook=path)
        hooks.append(hook)
    return tuple(hooks)


class MessageHooks:
    """Applies hooks to a message before its handler: the message to handle, or a typed refusal."""

    def __init__(self, agent_id: str, hooks: tuple[Callable[[Any], Any], ...]) -> None:
        self.agent_id = agent_id
        self.hooks = hooks

    def apply(self, sender: str | None, msg: Any) -> Any:
        if not self.hooks:
            return msg
        decided, msg = intervene(self.hooks, MessageEvent(self.agent_id, sender, msg))
        if decided.kind is InterventionKind.DROP:
            raise MessageDropped(f"agent {self.agent_id!r}: an intervention hook dropped "
                                 f"{type(msg).type_tag()}: {decided.reason}", reason=decided.reason)
        if decided.kind is InterventionKind.HOLD:
            raise MessageHeld(f"agent {self.agent_id!r}: an intervention hook held {type(msg).type_tag()}: "
                              f"{decided.reason}", reason=decided.reason)
        return msg
