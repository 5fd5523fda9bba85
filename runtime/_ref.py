"""References to agents: ``tell`` (fire and forget) and ``ask`` (request/response).

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
once.  AT_MOST_ONCE asks are never retried.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from protocols import Delivery, Envelope, Message, encode_envelope, error_from_wire, make_envelope

from . import _directory
from ._agent import current_deadline, current_stage
from ._backoff import Backoff
from ._boundary import creation_failed, from_ray
from ._holding import DEFAULT_HOLD_LIMIT, Outcome, TellPipeline
from ._reply import decode_reply
from .exceptions import AgentNotFound, AgentUnavailable, AskTimeout, Fenced, NotDurable

__all__ = ["AgentRef"]

DEFAULT_TIMEOUT = 30.0
#: Seconds between attempts while the agent is down and no new host is found
#: (none when a new host is found: the retry goes there at once).
_RETRY = Backoff(initial=0.01, factor=2.0, cap=0.4)  # 0.01, 0.02, ... 0.32, then 0.4

#: Seconds past the deadline a caller still waits for an answer.  A hop that
#: finds the deadline expired answers with DeadlineExpired saying where; the
#: caller gives that typed answer this long to arrive before it reports its
#: own AskTimeout ("expired at the caller").
DEADLINE_GRACE = 0.5


class AgentRef:
    """A handle on one agent by id; cheap to copy, safe to pass to other agents.

    A ref passed on (pickled) carries the agent's id and actor, not the
    tells this ref still holds or has in flight: those stay with this ref.
    """

    def __init__(self, agent_id: str, handle: Any, *, namespace: str, sender: str | None = None,
                 epoch: int | None = None, max_held: int = DEFAULT_HOLD_LIMIT) -> None:
        self.agent_id = agent_id
        self._handle = handle
        self._namespace = namespace
        self._sender = sender
        self._epoch = epoch  # the sending agent incarnation's fencing epoch; None from drivers
        self._down: str | None = None  # why the last attempt failed, while retrying
        self._tells = TellPipeline(_RayTransport(self), limit=max_held, agent_id=agent_id)

    def __getstate__(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "handle": self._handle, "namespace": self._namespace,
                "sender": self._sender, "epoch": self._epoch, "max_held": self.max_held}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["agent_id"], state["handle"], namespace=state["namespace"],  # type: ignore[misc]
                      sender=state["sender"], epoch=state["epoch"], max_held=state["max_held"])

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
                             epoch=self._epoch)

    @staticmethod
    def _result(raw: bytes) -> Any:
        ok, value = decode_reply(raw)
        if ok:
            return value
        raise error_from_wire(value)

    def _follow(self) -> bool:
        """Point at the agent's current host if it is another actor; whether it moved."""
        handle = self._lookup_handle()
        if handle is None:
            return False  # not registered right now (being restarted): try again until the deadline
        if handle._actor_id == self._handle._actor_id:
            return False
        self._handle = handle
        return True

    def _timeout(self, env: Envelope) -> AskTimeout:
        return AskTimeout(
            f"ask {env.type} to {self.agent_id!r} got no reply before its deadline "
            f"({env.deadline:.3f}, after {env.attempt} attempt(s)); expired at the caller",
            deadline=env.deadline,
            where="caller",
            attempts=env.attempt,
        )

    def _after_failure(self, exc: Exception, env: Envelope, backoff: float) -> bool:
        """An attempt of ``env`` failed with ``exc``: raise, or say whether to look for a new host.

        The one retry policy of ``ask`` and ``ask_async`` (which differ only
        in how they wait).  Every retry carries the same id, so the agent
        handles it once; an AT_MOST_ONCE message keeps no such record, so it
        is never sent again.

        * The process died (RayActorError): it may come back as the same actor
          (Ray's restart) or as a new actor under the same name (a supervisor's
          restart, a spare, a move to another node): look for a new host.
        * A replaced incarnation answered (Fenced): look for its successor.
        * Handled and committed, not yet shipped (NotDurable, SYNC): wait and
          ask again while the deadline allows, then raise it.
        """
        if isinstance(exc, RayActorError):
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._tells.agent_failed(why)  # tells in flight go again before the next attempt
            if env.delivery is Delivery.AT_MOST_ONCE or creation_failed(exc):
                raise from_ray(exc, self.agent_id, what="ask") from exc
            self._down = why
            return True
        if env.delivery is Delivery.AT_MOST_ONCE:
            raise exc
        if isinstance(exc, Fenced):
            self._down = "a replaced incarnation answered"
            return True
        if time.time() + backoff >= env.deadline:  # NotDurable
            raise exc
        return False

    def _lookup_handle(self) -> Any | None:
        """The actor hosting the agent now (through the agent directory), or None if none is.

        The one place a ref resolves its agent: asks following a restart and
        held tells looking for the new incarnation both come here.
        """
        try:
            return _directory.resolve(self.agent_id, namespace=self._namespace)
        except AgentNotFound:
            return None

    def _expired(self, env: Envelope) -> Exception:
        if self._down is not None:
            return AgentUnavailable(
                f"agent {self.agent_id!r} went down ({self._down}) and did not come back before the "
                f"deadline of {env.type} ({env.attempt} attempt(s))",
                agent_id=self.agent_id,
                attempts=env.attempt,
            )
        return self._timeout(env)

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

    def _settle_before(self, env: Envelope) -> None:
        """Before an ask: nothing held may be overtaken, so held tells go first (within the ask's deadline)."""
        if self._tells.settled(answered=False):
            return
        budget = max(0.0, (env.deadline or time.time()) - time.time())
        if not self._tells.wait_until_settled(time.monotonic() + budget, answered=False):
            self._down = self._tells.down or "not registered"
            raise self._expired(env)

    # -- ask --------------------------------------------------------------------

    def ask(self, msg: Message, *, timeout: float | None = None, delivery: Delivery | None = None) -> Any:
        """Send ``msg`` and wait for the handler's reply; raises AskTimeout at the deadline.

        ``timeout`` defaults to 30 s; inside a handler, the deadline is never
        later than the one of the message being handled.
        """
        env = self._envelope(msg, timeout, delivery, inherit=True)
        env.reply_to = env.sender or "caller"
        return self.ask_envelope(env)

    def _check_before_sending(self, env: Envelope) -> None:
        env.check_deadline(f"{env.sender or 'caller'} before sending {env.type} to {self.agent_id!r}")

    def ask_envelope(self, env: Envelope) -> Any:
        assert env.deadline is not None
        self._check_before_sending(env)
        self._down = None
        for backoff in _retries():
            self._settle_before(env)
            remaining = env.deadline - time.time()
            if remaining <= 0:
                raise self._expired(env)
            try:
                raw = ray.get(self._handle.deliver.remote(encode_envelope(env)), timeout=remaining + DEADLINE_GRACE)
                return self._result(raw)
            except GetTimeoutError as exc:
                raise self._timeout(env) from exc
            except (RayActorError, Fenced, NotDurable) as exc:
                if not (self._after_failure(exc, env, backoff) and self._follow()):
                    time.sleep(min(backoff, max(0.0, env.deadline - time.time())))
                env.attempt += 1
        raise AssertionError("unreachable")

    async def ask_async(self, msg: Message, *, timeout: float | None = None, delivery: Delivery | None = None) -> Any:
        """Awaitable ``ask``, for use inside async handlers and async drivers (deadline as ``ask``)."""
        env = self._envelope(msg, timeout, delivery, inherit=True)
        env.reply_to = env.sender or "caller"
        assert env.deadline is not None
        self._check_before_sending(env)
        self._down = None
        for backoff in _retries():
            while not self._tells.settled(answered=False):  # as _settle_before, without blocking the loop
                if time.time() >= env.deadline:
                    raise self._expired(env)
                await asyncio.sleep(0.01)
                self._tells.pump()
            remaining = env.deadline - time.time()
            if remaining <= 0:
                raise self._expired(env)
            try:
                raw = await asyncio.wait_for(self._handle.deliver.remote(encode_envelope(env)), remaining + DEADLINE_GRACE)
                return self._result(raw)
            except (TimeoutError, GetTimeoutError) as exc:
                raise self._timeout(env) from exc
            except (RayActorError, Fenced, NotDurable) as exc:
                if not (self._after_failure(exc, env, backoff) and await asyncio.to_thread(self._follow)):
                    await asyncio.sleep(min(backoff, max(0.0, env.deadline - time.time())))
                env.attempt += 1
        raise AssertionError("unreachable")

    def send_raw(self, raw: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Deliver raw wire bytes and decode the reply (for tools and tests of bad input)."""
        try:
            reply = ray.get(self._handle.deliver.remote(raw), timeout=timeout)
        except GetTimeoutError as exc:
            raise AskTimeout(f"raw send to {self.agent_id!r} got no reply in {timeout}s", where="caller") from exc
        except RayActorError as exc:
            raise from_ray(exc, self.agent_id, what="raw send") from exc
        return self._result(reply)

    # -- control ------------------------------------------------------------------

    def _control(self, method: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """An operator's call, made to the agent's current host.

        The host is looked up anew first (the agent may have moved to a spare
        or another node since this ref last spoke to it, and a replaced host
        that is still alive answers only for itself: a kill switch pulled
        there would stop nothing).  It does not wait for a restart: while no
        host serves the agent, AgentUnavailable at once.
        """
        self._follow()
        for last in (False, True):
            try:
                return ray.get(getattr(self._handle, method).remote(*args), timeout=timeout)
            except GetTimeoutError as exc:
                raise AskTimeout(f"{method} on {self.agent_id!r} got no reply in {timeout}s", where="caller") from exc
            except RayActorError as exc:
                # Died between the lookup and the call: once more, if a new host is there.
                if last or creation_failed(exc) or not self._follow():
                    raise from_ray(exc, self.agent_id, what=method) from exc
            except RayTaskError as exc:  # the host raised one of ours: as itself, not Ray's wrapper
                raise from_ray(exc, self.agent_id, what=method) from exc
        raise AssertionError("unreachable")

    def status(self, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Lifecycle state, incarnation, pid, sequence numbers, last checkpoint, last restore."""
        return self._control("status", timeout=timeout)

    def checkpoint(self, *, timeout: float = 120.0) -> dict[str, Any] | None:
        """Take a checkpoint now; returns its manifest."""
        return self._control("checkpoint", True, timeout=timeout)

    def restore_history(self, *, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Restore reports of the agent's recent incarnations, oldest first."""
        return self._control("restore_history", timeout=timeout)

    def transitions(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """State-transition records (agent, seq, time, op, key) after ``after_seq``, in seq order.

        The whole history within ``transition_retention``: recent records from the
        agent's LMDB, older ones from the segments shipped to the checkpoint store.
        """
        return self._control("transitions", after_seq, limit)

    def metrics(self) -> str:
        """The agent's Prometheus metrics, in text exposition format."""
        return self._control("metrics")

    def halt(self, who: str, why: str) -> dict[str, Any]:
        """Kill switch for this agent: nothing handled or sent until ``unhalt``; survives restarts."""
        return self._control("halt", who, why)

    def unhalt(self, who: str, why: str = "") -> dict[str, Any]:
        """Lift this agent's kill switch (recorded with who and why); it resumes unless quarantined."""
        return self._control("unhalt", who, why)

    def quarantine(self, who: str, why: str) -> dict[str, Any]:
        """Stop this agent handling (messages refused, state kept) until ``release``; survives restarts.

        For a supervised agent prefer its supervisor's ``quarantine`` (or
        ``supervisors.quarantine``), so the supervisor stops probing it too.
        """
        return self._control("quarantine", why, who)

    def release(self, who: str, why: str = "") -> dict[str, Any]:
        """Lift this agent's quarantine (recorded with who and why): it handles messages again."""
        return self._control("release", who, why)

    def operator_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest operator actions on this agent (action, who, why, time), oldest first."""
        return self._control("operator_log", limit)

    def dead_letters(self, *, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Dead letters kept by the agent, oldest first (optionally of one reason)."""
        return self._control("dead_letters", reason, limit)

    def replay_dead_letters(self, *, ids: list[str] | None = None, reason: str | None = None,
                            timeout: float = 120.0) -> list[dict[str, Any]]:
        """Deliver dead letters again: the given ids, or all of a reason."""
        if not ids and not reason:
            raise ValueError("name the dead letters to replay: ids=[...] or reason=...")
        return self._control("replay_dead_letters", ids, reason, timeout=timeout)


class _RayTransport:
    """Held tells' way to the agent (``_holding.Transport``): the ref's actor, through Ray."""

    def __init__(self, ref: AgentRef) -> None:
        self._ref = ref  # the ref owns its current actor; finding a new one updates it for asks too

    def find(self) -> bool:
        handle = self._ref._lookup_handle()
        if handle is None:
            return False
        self._ref._handle = handle
        return True

    def send(self, env: Envelope) -> Any:
        return self._ref._handle.deliver.remote(encode_envelope(env))

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
        why = (f"the driver's ref held {limit} tells (max_held) while agent {self._ref.agent_id!r} was down; "
               "newer ones overflowed")
        return self._ref._handle.record_dead_letters.remote(
            "overflow", [encode_envelope(e) for e in envs], why, dropped)


def _outcome(token: Any) -> Outcome:
    try:
        ray.get(token, timeout=0)
    except RayActorError:
        return Outcome.FAILED
    except Exception:
        return Outcome.DELIVERED  # the call ran and raised: nothing to send again
    return Outcome.DELIVERED


def _retries() -> Iterator[float]:
    """The delays between an ask's attempts: ``_RETRY``'s, for ever (the deadline ends the loop)."""
    return (_RETRY.delay(attempt) for attempt in itertools.count())
