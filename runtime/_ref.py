"""References to agents, the data plane: ``tell`` (fire and forget) and ``ask`` (request/response).

Operators' calls on the agent are ``ref.admin`` (``_admin``); where the
agent is served now is ``ref.route`` (``_route``), shared by both.

Naming follows one pair convention: ``ask``/``tell`` block the calling thread,
``ask_async``/``tell_async`` are awaitable; ``timeout`` is relative seconds,
turned at once into an absolute ``deadline`` carried in the envelope.

Tells from a driver are held while the agent restarts, bounded, and
delivered in order to the new incarnation (see ``_holding``); ``flush()``
waits until every tell is answered.

Retry rule: when the agent's process dies under a call, an ``ask`` is sent
again with the same message id (attempt + 1) until its deadline, to the same
actor once Ray restarts it, or to the new actor that took the agent's name
(a supervisor's restart).  For EFFECTIVELY_ONCE messages (the default) the agent has recorded
the id with the effect, so the retry returns the first reply instead of
running the handler twice; an ask that returned therefore took effect exactly
once.  AT_MOST_ONCE asks are never retried.  The decisions between attempts
are one policy (``_ask_retry.AskRetry``); ``ask`` and ``ask_async`` only wait
as it says, on the calling thread or on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from protocols import Delivery, Envelope, Message, encode_envelope, error_from_wire, make_envelope

from ._admin import AgentAdmin
from ._agent import current_deadline, current_stage
from ._ask_retry import DEADLINE_GRACE, AskRetry, Next
from ._boundary import from_ray
from ._holding import DEFAULT_HOLD_LIMIT, Outcome, TellPipeline
from ._reply import decode_reply
from ._route import DEFAULT_TIMEOUT, Route
from ._selfwait import refuse_self_wait
from ._trace import outgoing
from .exceptions import AskTimeout, Fenced, NotDurable

__all__ = ["DEADLINE_GRACE", "DEFAULT_TIMEOUT", "AgentRef"]

#: Seconds between looks at held tells while an async ask waits for them (the loop stays free).
_SETTLE_POLL = 0.01


class AgentRef:
    """A handle on one agent by id; cheap to copy, safe to pass to other agents.

    The data plane: ``tell``, ``ask``, ``flush`` and their async forms.
    Operators' calls (status, checkpoint, kill switch, dead letters, ...) are
    on ``ref.admin``; both go to the host ``ref.route`` names now.

    A ref passed on (pickled) carries the agent's id and actor, not the
    tells this ref still holds or has in flight: those stay with this ref.
    """

    def __init__(self, agent_id: str, handle: Any, *, namespace: str, sender: str | None = None,
                 epoch: int | None = None, max_held: int = DEFAULT_HOLD_LIMIT) -> None:
        self.agent_id = agent_id
        self._route = Route(agent_id, handle, namespace=namespace)
        self._admin = AgentAdmin(self._route)
        self._sender = sender
        self._epoch = epoch  # the sending agent incarnation's fencing epoch; None from drivers
        self._tells = TellPipeline(_RayTransport(self._route), limit=max_held, agent_id=agent_id)

    def __getstate__(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "handle": self._route.handle, "namespace": self._route.namespace,
                "sender": self._sender, "epoch": self._epoch, "max_held": self.max_held}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["agent_id"], state["handle"], namespace=state["namespace"],  # type: ignore[misc]
                      sender=state["sender"], epoch=state["epoch"], max_held=state["max_held"])

    @property
    def route(self) -> Route:
        """Where the agent is served now (its current host), shared with ``admin`` and the held tells."""
        return self._route

    @property
    def admin(self) -> AgentAdmin:
        """Operators' calls on this agent: status, checkpoint, kill switch, quarantine, dead letters, ..."""
        return self._admin

    @property
    def max_unanswered(self) -> int:
        """Tells from this ref that may wait in the agent's queue at once (default 10,000).

        Past it, ``tell`` raises MailboxFull instead of growing the queue.
        (An agent's own sends are bounded by its outbox ``window`` instead.)
        """
        return self._tells.max_in_flight

    @max_unanswered.setter
    def max_unanswered(self, value: int) -> None:
        self._tells.max_in_flight = value

    @property
    def max_held(self) -> int:
        """Tells this ref holds while the agent is down (default 1,000); newer ones overflow to dead letters."""
        return self._tells.held.limit

    @max_held.setter
    def max_held(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_held must be at least 1, got {value}")
        self._tells.held.limit = value

    def __repr__(self) -> str:
        return f"AgentRef({self.agent_id!r})"

    # -- envelopes ---------------------------------------------------------------

    def _envelope(self, msg: Message, timeout: float | None, delivery: Delivery | None, *, inherit: bool = False) -> Envelope:
        if not isinstance(msg, Message):
            raise TypeError(f"expected a protocols.Message, got {type(msg).__name__}")
        inherited = current_deadline.get() if inherit else None
        if timeout is None and inherit:
            timeout = DEFAULT_TIMEOUT if inherited is None else None
        deadline = None if timeout is None else time.time() + timeout
        if inherited is not None:
            deadline = inherited if deadline is None else min(deadline, inherited)
        return make_envelope(msg, self.agent_id, sender=self._sender, deadline=deadline, delivery=delivery,
                             epoch=self._epoch, traceparent=outgoing())

    def _ask_envelope(self, msg: Message, timeout: float | None, delivery: Delivery | None) -> Envelope:
        env = self._envelope(msg, timeout, delivery, inherit=True)
        env.reply_to = env.sender or "caller"
        return env

    @staticmethod
    def _result(raw: bytes) -> Any:
        ok, value = decode_reply(raw)
        if ok:
            return value
        raise error_from_wire(value)

    # -- tell -------------------------------------------------------------------

    def tell(self, msg: Message, *, delivery: Delivery | None = None, timeout: float | None = None) -> None:
        """Send without waiting for the handler; never blocks.

        Inside a handler this is ``Agent.send``: the message leaves with the
        handler's commit, through the durable outbox.  From a driver it is one
        call; a refusal is recorded as a dead letter by the agent.  If the
        agent's process dies, tells are held (at most ``max_held``) and go to
        the new incarnation in order with this ref's next call (``tell``,
        ``ask`` or ``flush``); a failed AT_LEAST_ONCE or EFFECTIVELY_ONCE tell
        goes again with the same id, an AT_MOST_ONCE one does not.  Raises
        MailboxFull when ``max_unanswered`` tells are queued at a live agent.
        """
        stage = current_stage.get()
        if stage is not None:
            env = self._envelope(msg, timeout, delivery, inherit=True)
            stage(self.agent_id, env)
            return
        self._tells.tell(self._envelope(msg, timeout, delivery))

    async def tell_async(self, msg: Message, *, delivery: Delivery | None = None, timeout: float | None = None) -> None:
        self.tell(msg, delivery=delivery, timeout=timeout)

    def flush(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Block until every tell from this ref is answered by the agent (held ones delivered first).

        Raises AgentUnavailable if the agent is still down at the timeout
        (the held tells stay held), AskTimeout if it is up but has not
        answered them all.  A driver calls it before it exits, or whenever it
        must know its tells arrived.
        """
        self._tells.flush(timeout)

    def tell_stats(self) -> dict[str, Any]:
        """This ref's tells: mode, in flight, held, overflowed, resent, lost (at most once), why down."""
        return self._tells.stats()

    # -- ask: one retry policy (``AskRetry``), a blocking and an awaiting waiter ---------

    def ask(self, msg: Message, *, timeout: float | None = None, delivery: Delivery | None = None) -> Any:
        """Send ``msg`` and wait for the handler's reply; raises AskTimeout at the deadline.

        ``timeout`` defaults to 30 s; inside a handler, the deadline is never
        later than the one of the message being handled.
        """
        return self.ask_envelope(self._ask_envelope(msg, timeout, delivery))

    def ask_envelope(self, env: Envelope) -> Any:
        """``ask`` for a prepared envelope (its id and deadline kept): the blocking waiter of ``AskRetry``."""
        refuse_self_wait(self.agent_id, self._route.handle)
        retry = AskRetry(env, self._tells, agent_id=self.agent_id)
        while True:
            budget = retry.held_first()
            if budget is not None and not self._tells.wait_until_settled(time.monotonic() + budget, answered=False):
                raise retry.still_held()
            wait = retry.reply_wait()
            try:
                call = self._route.handle.deliver.remote(encode_envelope(env))
                return self._result(ray.get(call, timeout=wait))
            except GetTimeoutError as exc:
                raise retry.timed_out() from exc
            except (RayActorError, Fenced, NotDurable) as exc:
                pause = retry.next_attempt(retry.failed(exc) is Next.FOLLOW and self._route.follow())
                if pause:
                    time.sleep(pause)

    async def ask_async(self, msg: Message, *, timeout: float | None = None, delivery: Delivery | None = None) -> Any:
        """Awaitable ``ask``, for use inside async handlers and async drivers (deadline as ``ask``).

        The awaiting waiter of ``AskRetry``: the same decisions as ``ask``,
        without blocking the event loop.
        """
        env = self._ask_envelope(msg, timeout, delivery)
        refuse_self_wait(self.agent_id, self._route.handle)
        retry = AskRetry(env, self._tells, agent_id=self.agent_id)
        while True:
            while (budget := retry.held_first()) is not None:
                if budget <= 0:
                    raise retry.still_held()
                await asyncio.sleep(min(_SETTLE_POLL, budget))
                self._tells.pump()
            wait = retry.reply_wait()
            try:
                call = self._route.handle.deliver.remote(encode_envelope(env))
                return self._result(await asyncio.wait_for(call, wait))
            except (TimeoutError, GetTimeoutError) as exc:
                raise retry.timed_out() from exc
            except (RayActorError, Fenced, NotDurable) as exc:
                moved = retry.failed(exc) is Next.FOLLOW and await asyncio.to_thread(self._route.follow)
                pause = retry.next_attempt(moved)
                if pause:
                    await asyncio.sleep(pause)

    def send_raw(self, raw: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Deliver raw wire bytes and decode the reply (for tools and tests of bad input)."""
        try:
            reply = ray.get(self._route.handle.deliver.remote(raw), timeout=timeout)
        except GetTimeoutError as exc:
            raise AskTimeout(f"raw send to {self.agent_id!r} got no reply in {timeout}s", where="caller") from exc
        except RayActorError as exc:
            raise from_ray(exc, self.agent_id, what="raw send") from exc
        return self._result(reply)


class _RayTransport:
    """Held tells' way to the agent (``_holding.Transport``): the route's current actor, through Ray."""

    def __init__(self, route: Route) -> None:
        self._route = route  # shared with the ref: a host found here is the one asks use too

    def find(self) -> bool:
        return self._route.find()

    def send(self, env: Envelope) -> Any:
        return self._route.handle.deliver.remote(encode_envelope(env))

    def poll(self, tokens: Sequence[Any]) -> list[Outcome]:
        ready, _ = ray.wait(list(tokens), num_returns=len(tokens), timeout=0, fetch_local=False)
        done = set(ready)
        prefix = []
        for token in tokens:
            if token not in done:
                break
            prefix.append(token)
        if not prefix:
            return []
        try:
            ray.get(prefix)
        except Exception:
            return [_outcome(token) for token in prefix]
        return [Outcome.DELIVERED] * len(prefix)

    def wait(self, tokens: Sequence[Any], timeout: float) -> None:
        ray.wait(list(tokens), num_returns=1, timeout=timeout, fetch_local=False)

    def record(self, envs: list[Envelope], dropped: int, limit: int) -> Any:
        why = (f"the driver's ref held {limit} tells (max_held) while agent {self._route.agent_id!r} was down; "
               "newer ones overflowed")
        return self._route.handle.record_dead_letters.remote(
            "overflow", [encode_envelope(e) for e in envs], why, dropped)


def _outcome(token: Any) -> Outcome:
    try:
        ray.get(token, timeout=0)
    except RayActorError:
        return Outcome.FAILED
    except Exception:
        return Outcome.DELIVERED  # the call ran and raised: nothing to send again
    return Outcome.DELIVERED

