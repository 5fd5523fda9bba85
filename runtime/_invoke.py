"""Calling user code: handlers and hooks, sync or async, inside the host's transaction.

:class:`Invoker` owns the agent object and its handler table.  A sync
handler runs on the handling thread; an ``async`` one on a private event
loop thread while the handling thread waits for it.  Either way it runs with
two context variables set: the message's deadline (``current_deadline``) and
the transaction's send (``current_stage``), so ``Agent.send`` and a ref's
``tell`` inside a handler stage into the transaction.

Invariant: :meth:`Invoker.call` never raises for what user code raises: it
returns ``(ok, result or exception)``; ``running_for`` says how long the
call in progress has run (a liveness probe reads it from another thread).
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from protocols import Envelope, WireError, parse_message

from ._agent import Agent, Context, bind, current_deadline, current_stage
from ._hooks import MessageHooks
from ._loop import LoopThread
from ._selfwait import current_asker, current_lane
from ._state import State
from ._trace import MessageTrace, current_message
from .exceptions import HandlerError, NoHandler, UnencodableReply

__all__ = ["Invoker"]

log = logging.getLogger("garrison.agent")


class Invoker:
    """The agent object, its handlers, and how they are called (see module docstring)."""

    def __init__(self, agent: Agent, *, agent_id: str, state: State, send: Callable[[str, Any], None],
                 lookup: Callable[[str], Any] | None, gateway: Any = None,
                 hooks: MessageHooks | None = None, after: Callable[[], None] | None = None,
                 decide: Any = None, gatekeeper: Any = None, tap: Any = None, spans: Any = None) -> None:
        self.agent = agent
        self._spans = spans  # OpenTelemetry spans (``_spans``), or None
        #: The observer tap (``_observer``; None: not watched): one event per message handled. Closed with this.
        self._tap = tap
        # Called when a handler or hook returns or raises, before its changes commit (the
        # gateway's deferred outcomes); a failure fails the handler.
        self._after = after
        self.agent_id = agent_id
        self._hooks = hooks
        bind(agent, agent_id=agent_id, state=state, log=logging.getLogger(f"garrison.agent.{agent_id}"),
             lookup=lookup, gateway=gateway, decide=decide, gatekeeper=gatekeeper)
        # Handlers by type tag, not by class object: a message class that reached
        # this process by value (defined in a driver's ``__main__``) may be a
        # different object from the one the agent class was pickled with.
        self._handlers = {cls.type_tag(): method for cls, method in type(agent).__handlers__.items()}
        self._send = send
        self._loop = LoopThread(f"garrison-loop-{agent_id}")
        self._started: float | None = None

    def running_for(self) -> float | None:
        """Seconds the handler or hook in progress has run; None when none runs."""
        started = self._started
        return None if started is None else time.monotonic() - started

    def resolve(self, env: Envelope) -> tuple[Any, str]:
        """The message and the name of the method that handles it; NoHandler if none does."""
        msg = parse_message(env)
        if self._hooks is not None:
            msg = self._hooks.apply(env.sender, msg)  # MessageDropped / MessageHeld: refused like a bad message
        method = self._handlers.get(type(msg).__message_tag__)
        if method is None:
            raise NoHandler(
                f"agent {self.agent_id!r} ({type(self.agent).__qualname__}) has no handler for "
                f"{env.type}; it handles: {', '.join(self.agent.handled_types()) or 'nothing'}",
                tag=env.type,
                handles=self.agent.handled_types(),
            )
        return msg, method

    def handle(self, env: Envelope, msg: Any, method: str) -> tuple[bool, Any]:
        """Run ``method`` on ``msg`` with ``env``'s context: ``(ok, reply or exception)``."""
        self.agent.context = Context(env.id, env.sender, env.deadline, env.attempt, env.traceparent)
        message = current_message.set(MessageTrace(env.id.hex(), env.traceparent))  # the logs' and sends' trace
        t0 = time.monotonic()
        ok = False
        try:
            if self._spans is None:
                ok, result = self.call(getattr(self.agent, method), (msg,), env.deadline)
            else:
                with self._spans.handling(env.id.hex(), env.type, env.traceparent):
                    ok, result = self.call(getattr(self.agent, method), (msg,), env.deadline)
        finally:
            self.agent.context = None
            if log.isEnabledFor(logging.DEBUG):  # a line per message, with its ids (``_logs``); one check else
                log.debug("%s %s from %s in %.6f s", "handled" if ok else "failed", env.type, env.sender,
                          time.monotonic() - t0)
            current_message.reset(message)
        if self._tap is not None:
            self._tap.emit("message", env.traceparent, {"id": env.id.hex(), "type": env.type, "sender": env.sender,
                                                        "ok": ok, "seconds": time.monotonic() - t0})
        return ok, result

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], deadline: float | None) -> tuple[bool, Any]:
        """Run a handler or hook (sync, or async on the loop thread): ``(ok, result or exception)``."""
        self._started = time.monotonic()
        # Set only what differs: a batch sets the stage once for all its
        # messages, and its messages mostly share one deadline (none).
        deadline_token = current_deadline.set(deadline) if current_deadline.get() != deadline else None
        stage_token = current_stage.set(self._send) if current_stage.get() is not self._send else None
        asker_token = current_asker.set(self.agent_id) if current_asker.get() != self.agent_id else None
        try:
            result = fn(*args)
            if result is not None and inspect.isawaitable(result):
                result = self._loop.run(self._in_context(result, deadline, current_message.get(), current_lane.get()))
            if self._after is not None:
                self._after()
            return True, result
        except Exception as exc:
            if self._after is not None:
                try:
                    self._after()  # the effects happened whether or not the handler failed
                except Exception:  # noqa: BLE001 - the handler's own error is what the caller gets
                    log.exception("agent %s: recording the outcomes of a failed handler's actions failed",
                                  self.agent_id)
            return False, exc
        finally:
            if deadline_token is not None:
                current_deadline.reset(deadline_token)
            if stage_token is not None:
                current_stage.reset(stage_token)
            if asker_token is not None:
                current_asker.reset(asker_token)
            self._started = None

    def staging(self) -> Any:
        """Set the transaction's send as the stage for a whole batch; pass the token to :meth:`unstage`."""
        return current_stage.set(self._send)

    @staticmethod
    def unstage(token: Any) -> None:
        current_stage.reset(token)

    async def _in_context(self, awaitable: Any, deadline: float | None, message: MessageTrace | None,
                          lane: tuple[str, str] | None) -> Any:
        # Context variables do not cross threads: set them again on the loop.
        current_deadline.set(deadline)
        current_stage.set(self._send)
        current_message.set(message)
        current_asker.set(self.agent_id)
        current_lane.set(lane)
        return await awaitable

    def handler_error(self, method: str, exc: Exception) -> WireError:
        if isinstance(exc, WireError):
            return exc
        return HandlerError(
            f"{type(self.agent).__qualname__}.{method} raised {type(exc).__name__}: {exc}",
            exception=type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)[-3:]),
        )

    def unencodable(self, method: str, result: Any, exc: Exception) -> UnencodableReply:
        return UnencodableReply(
            f"{type(self.agent).__qualname__}.{method} returned a {type(result).__name__} that cannot be "
            f"encoded as a reply ({exc}); its changes were rolled back. Return msgpack-able data or a "
            "pydantic model", handler=method, value_type=type(result).__name__)

    def close(self) -> None:
        self._loop.close()
        if self._tap is not None:
            self._tap.close()
