"""The authoring API: the ``Agent`` base class and the ``@handler`` decorator.

A user writes plain Python; no Ray code::

    class Counter(Agent):
        @handler
        def add(self, msg: Add) -> int:
            return self.state.increment("count", msg.n)

        @handler
        async def get(self, msg: Get) -> int:
            return self.state.get("count", 0)

A handler takes one message (a :class:`protocols.Message` subclass, read
from the parameter's annotation or given as ``@handler(Add)``) and returns
the reply of an ``ask`` (ignored for a ``tell``): msgpack-able data or a
pydantic model.  Handlers may be ``async``.  A handler's state changes commit
atomically with the handling of its message; if it raises, they are rolled
back, the sender gets :class:`HandlerError`, and the agent goes on.  A reply
that cannot be encoded (an arbitrary object) counts as raising: rolled back,
and the sender gets :class:`UnencodableReply` (a HandlerError).

Agents and messages may be defined in the driver script itself (``python
driver.py``): Ray ships such classes to its workers by value, and their
registered names, versions and handler tables travel with them.

Lifecycle hooks, all optional, all may be ``async``, all may change state
(committed like a handler's changes):

``on_restore(report)``  after the state was rebuilt from local LMDB or a
                        checkpoint (not on a fresh start), before ``on_start``.
``on_start()``          once per incarnation, before the first message.
                        If it raises, the agent goes to FAILED and refuses messages.
``on_stop()``           on a graceful stop, before the final checkpoint.
                        If it raises, the error is logged and the stop goes on.
``summary(state)``      a compact pydantic model of the state, saved with every
                        checkpoint.  It runs on the checkpoint thread against
                        the checkpoint's snapshot, so it must only read ``state``.

Governed actions: a handler acts on the world only through ``await
self.act(action)`` (a :class:`governance.Action`), which the agent's gateway
checks (grants, risk, breakers, budget), records in its ledger and performs
with the tool the class maps it to in ``tools``; it answers a
:class:`governance.Outcome`, never raises for what the tool did.

People's decisions: a handler that takes one (the approval queue's approve and
deny) checks who sent it with ``self.admit(action, who)``, against the agent's
operators file (``AgentConfig.operators``; ``audit._operators``).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocols import Delivery, Message, make_envelope

from ._trace import outgoing

if TYPE_CHECKING:
    from ._ref import AgentRef
    from ._restore import RestoreReport
    from ._state import ReadOnlyState, State

__all__ = ["Agent", "Context", "handler"]

_HANDLES = "__garrison_handles__"

#: The absolute deadline of the message being handled in this task, if any.
#: An ask made from a handler without a timeout inherits it: the remaining
#: budget passes on down the chain.
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("garrison_deadline", default=None)

#: While a handler or hook runs: stages an outgoing ``(recipient, envelope)``
#: so it leaves only if the handler's changes commit (the transactional outbox).
current_stage: contextvars.ContextVar[Callable[[str, Any], None] | None] = contextvars.ContextVar(
    "garrison_stage", default=None
)


def handler(fn: Callable[..., Any] | type[Message] | None = None, /) -> Any:
    """Mark a method as the handler of one message class (see module docstring)."""

    def mark(func: Callable[..., Any], cls: type[Message] | None) -> Callable[..., Any]:
        if cls is None:
            params = list(inspect.signature(func).parameters.values())
            if len(params) != 2:
                raise TypeError(f"handler {func.__qualname__} must take (self, message)")
            hints = typing.get_type_hints(func)
            cls = hints.get(params[1].name)
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise TypeError(
                f"handler {func.__qualname__}: annotate the message parameter with a "
                f"protocols.Message subclass, or write @handler(MessageClass)"
            )
        setattr(func, _HANDLES, cls)
        return func

    if isinstance(fn, type):
        return lambda func: mark(func, fn)
    if fn is None:
        return lambda func: mark(func, None)
    return mark(fn, None)


@dataclass(slots=True)
class Context:
    """The message being handled, as far as a handler needs to know."""

    message_id: bytes
    sender: str | None
    deadline: float | None
    attempt: int
    traceparent: str | None

    def remaining(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now


class Agent:
    """Base class of user agents.  See the module docstring for the contract."""

    #: message class -> handler function; built per subclass.
    __handlers__: dict[type[Message], str] = {}

    #: action class -> the tool that performs it (a callable or a ``governance.Tool``).
    tools: typing.ClassVar[dict[Any, Any]] = {}
    #: The semantic breaker's scorer (with ``AgentConfig.drift``): a function of one action
    #: result giving its drift in [0, 1]; declare it with ``staticmethod``.
    drift_scorer: typing.ClassVar[Callable[[Any], float] | None] = None
    #: The prompts this version uses (name -> text) and its model ids (name -> id): part of its
    #: manifest (``_version``), so a changed prompt or model is a new, recorded agent version.
    prompts: typing.ClassVar[dict[str, str]] = {}
    models: typing.ClassVar[dict[str, str]] = {}

    agent_id: str
    state: State
    context: Context | None
    log: logging.Logger

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Dispatch is by method name, so a subclass overriding a handler's
        # method (decorated or not) is what runs.
        table: dict[type[Message], str] = {}
        for klass in reversed(cls.__mro__):
            here: dict[type[Message], str] = {}
            for name, attr in vars(klass).items():
                target = getattr(attr, _HANDLES, None)
                if target is None:
                    continue
                if target in here:
                    raise TypeError(
                        f"{klass.__qualname__}: {here[target]} and {name} both handle {target.type_tag()}"
                    )
                here[target] = name
            table.update(here)
        cls.__handlers__ = table

    @classmethod
    def handled_types(cls) -> list[str]:
        return sorted(m.type_tag() for m in cls.__handlers__)

    # Hooks: defaults do nothing.
    def on_restore(self, report: RestoreReport) -> Any:
        return None

    def on_start(self) -> Any:
        return None

    def on_stop(self) -> Any:
        return None

    def gauges(self) -> dict[str, float]:
        """Gauges of this agent's own, by metric name: read whenever its metrics are collected.

        Exported with the runtime's (labelled with the agent's id; through Ray's
        metrics, as ``ray_<name>``).  Called off the handling thread: return numbers
        the handlers keep in memory, never read ``self.state`` here.  The approval
        queue's ``garrison_approvals_pending`` is one.
        """
        return {}

    def summary(self, state: ReadOnlyState) -> Any:
        return None

    def send(
        self, to: str, msg: Message, *, delivery: Delivery | None = None, timeout: float | None = None,
        inherit_deadline: bool = True,
    ) -> None:
        """Send ``msg`` to agent ``to`` once this handler's changes commit.

        AT_LEAST_ONCE and EFFECTIVELY_ONCE messages go through this agent's
        durable outbox (batched, retried, in order); AT_MOST_ONCE ones are
        sent once, right after the commit.  Same as ``self.lookup(to).tell(msg)``.
        The message carries the handled message's deadline (shortened by ``timeout``);
        ``inherit_deadline=False`` gives it ``timeout`` only (or none): a hand-over that must
        outlive whoever asked this handler, such as a pipeline stage's ticket to the next queue.
        """
        stage = current_stage.get()
        if stage is None:
            raise RuntimeError("send() is only available while a handler or hook runs")
        deadline = current_deadline.get() if inherit_deadline else None
        if timeout is not None:
            deadline = min(deadline or float("inf"), time.time() + timeout)
        # The trace goes on with the message, one hop further (``_trace``): logs, audit records and an
        # observer follow it across agents.
        stage(to, make_envelope(msg, to, sender=self.agent_id, deadline=deadline, delivery=delivery,
                                traceparent=outgoing()))

    def lookup(self, agent_id: str) -> AgentRef:
        """A reference to another agent; asks made through it from a handler
        carry this agent as sender."""
        finder = getattr(self, "_lookup", None)
        if finder is None:
            raise RuntimeError("lookup() is only available inside a running agent host")
        return finder(agent_id)

    async def act(self, action: Any, *, key: str | None = None, approval: str | None = None,
                  context: str = "") -> Any:
        """Perform ``action`` through this agent's gateway: a ``governance.Outcome``.

        ``key`` is the call's idempotency key; by default the ``n``-th action
        the current message asks for gets ``<message id>/<n>``, so a message
        redelivered after a crash gets the recorded outcomes instead of acting
        twice.  ``approval`` resumes a high-risk action once its request is
        decided (the id an ``ApprovalDecided`` message carries; the key is then
        ``approval:<id>``); ``context`` is what a person deciding it reads.
        """
        gateway = getattr(self, "_gateway", None)
        if gateway is None:
            raise RuntimeError("act() is only available inside a running agent host")
        return await gateway.act(action, key=key, approval=approval, context=context)

    def decide(self, choice: Any, *, options: typing.Iterable[Any] = (), rationale: str = "",
               context: Any = None, keep_context: bool = False, actions: typing.Iterable[str] = ()) -> str:
        """Record a decision in the agent's audit log, with this handler's changes; its id.

        ``choice`` among ``options``, with the ``rationale``; ``context`` is what
        the decision saw: its SHA-256 digest is recorded, the context itself only
        with ``keep_context``; ``actions`` are ids of actions it led to.  The
        message's id and trace are added.  All of it must be plain data (str,
        numbers, bool, None, bytes, lists, str-keyed maps).  If the handler
        fails, the decision is not recorded, like the rest of its changes.
        """
        recorder = getattr(self, "_decide", None)
        if recorder is None or current_stage.get() is None:
            raise RuntimeError("decide() is only available while a handler runs")
        return recorder(choice, options=options, rationale=rationale, context=context,
                        keep_context=keep_context, actions=actions)

    def admit(self, action: str, who: Any, *, on: str | None = None) -> Any:
        """The operator ``who`` is, if they may do ``action`` here: an ``audit.Identity`` (name, auth).

        For handlers that take operators' decisions (the approval queue's
        approve and deny): with ``AgentConfig.operators`` set, ``who`` must be a
        credential signed for ``action`` on this agent by an operator whose role
        grants it, else ``audit.Unauthenticated`` or ``audit.Forbidden``; without
        it, ``who`` is a name, admitted as ``unverified``.  ``on``: what the credential
        must be signed for, when narrower than this agent (say ``<agent id>/<request id>``).
        """
        gatekeeper = getattr(self, "_gatekeeper", None)
        if gatekeeper is None:
            raise RuntimeError("admit() is only available inside a running agent host")
        return gatekeeper.admit(action, who, on=on)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {getattr(self, 'agent_id', '?')}>"


def bind(agent: Agent, *, agent_id: str, state: State, log: logging.Logger,
         lookup: Callable[[str], AgentRef] | None, gateway: Any = None, decide: Any = None,
         gatekeeper: Any = None) -> None:
    """Give a user's agent object what its host provides (the attributes ``Agent`` documents).

    The one place they are set; ``lookup``, ``gateway``, ``decide`` and ``gatekeeper`` are private to
    ``Agent`` (users call ``Agent.lookup``, ``Agent.act``, ``Agent.decide`` and ``Agent.admit``), hence set here,
    in the module that owns the class.
    """
    agent.agent_id = agent_id
    agent.state = state
    agent.context = None
    agent.log = log
    agent._lookup = lookup
    agent._gateway = gateway
    agent._decide = decide
    agent._gatekeeper = gatekeeper
