"""The runtime's error boundary: what may cross it, and how foreign errors are translated.

Invariants:

- An agent host's actor methods return an encoded reply or raise a
  :class:`GarrisonError`; anything else raised inside them becomes an
  :class:`InternalError` naming its type and the method (``guarded``).
- A caller classifies Ray's errors by type, never by their text
  (``from_ray``): a Garrison error raised remotely comes back as a clean
  instance of its own class (not Ray's dual ``RayTaskError`` subclass); an
  actor whose creation failed is an :class:`AgentStartError`; an actor that
  died or cannot be reached is :class:`AgentUnavailable`; a wait that ran
  out is :class:`AskTimeout`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayError, RayTaskError

from protocols.exceptions import GarrisonError

from .exceptions import AgentStartError, AgentUnavailable, AskTimeout, InternalError

__all__ = ["copy_error", "creation_failed", "from_ray", "guarded", "start_failed"]

log = logging.getLogger("garrison.boundary")

F = TypeVar("F", bound=Callable[..., Any])


def copy_error(exc: GarrisonError) -> GarrisonError:
    """A fresh instance of ``exc``'s own class, with its message and details."""
    return type(exc)(exc.message, **exc.details)


def internal_error(exc: BaseException, where: str) -> InternalError:
    return InternalError(f"{where}: unexpected {type(exc).__name__}: {exc}", exception=type(exc).__name__,
                         where=where)


def guarded(method: F) -> F:
    """Let only Garrison errors out of a host's actor method (see the module invariants)."""

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except GarrisonError:
            raise
        except Exception as exc:
            log.exception("%s raised outside the runtime's error types", method.__qualname__)
            raise internal_error(exc, method.__name__) from exc

    # Not functools.wraps: a ``__wrapped__`` attribute on an actor method left
    # handles to a host that another process created (a supervisor's child,
    # looked up by a driver) unable to reach it.
    call.__name__, call.__qualname__, call.__doc__ = method.__name__, method.__qualname__, method.__doc__
    call.__module__ = method.__module__
    return call  # type: ignore[return-value]


def start_failed(agent_id: str, exc: BaseException) -> AgentStartError:
    """Why a host could not start ``agent_id``, as one AgentStartError naming the cause's type."""
    if isinstance(exc, AgentStartError):
        return exc
    text = exc.message if isinstance(exc, GarrisonError) else str(exc)
    return AgentStartError(f"agent {agent_id!r} failed to start: {type(exc).__name__}: {text}",
                           agent_id=agent_id, cause=type(exc).__name__)


def from_ray(exc: BaseException, agent_id: str, *, what: str = "call") -> GarrisonError:
    """One of ours for an error a Ray call raised (by type; see the module invariants)."""
    if isinstance(exc, GarrisonError) and not isinstance(exc, RayError):
        return exc
    if isinstance(exc, RayTaskError):
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if isinstance(cause, GarrisonError):
            return copy_error(cause)
        return internal_error(cause or exc, f"{what} on agent {agent_id!r}")
    if creation_failed(exc):
        # The message only: the traceback's last line names the constructor's error.
        text = str(exc).strip()
        tail = text.splitlines()[-1] if text else type(exc).__name__
        return AgentStartError(f"agent {agent_id!r} failed to start: {tail}", agent_id=agent_id)
    if isinstance(exc, RayActorError):
        return AgentUnavailable(f"agent {agent_id!r} is unavailable: {_first_line(exc)}", agent_id=agent_id)
    if isinstance(exc, GetTimeoutError):
        return AskTimeout(f"{what} on {agent_id!r} got no reply in time", where="caller", agent_id=agent_id)
    return internal_error(exc, f"{what} on agent {agent_id!r}")


def creation_failed(exc: BaseException) -> bool:
    """Whether Ray reports that the actor's constructor (its creation task) failed."""
    return isinstance(exc, ActorDiedError) and bool(exc.actor_init_failed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
