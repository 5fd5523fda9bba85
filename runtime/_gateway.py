"""The gateway: the one way a handler's actions reach a tool (``await self.act(action)``).

Each call walks the same steps, and the first that says no ends it with a
structured :class:`governance.Outcome` (never an exception)::

    ledger      this key already has an outcome -> that outcome (nothing runs twice);
                an intent without one -> recover (below)
    hooks       an intervention hook drops it -> refused; modifies it -> go on with
                the replacement; holds it -> approval, whatever its risk
    grants      the action's capability is not granted -> refused        (before any work)
    risk        prohibited -> refused; high (or medium past the review limit) -> approval
    approval    without ``approval=``: a request to the queue -> pending; with it: the
                queue's record, checked (bound, decided, not expired) -> go on, or
                denied / expired / pending (``_approval_desk``)
    tool        no tool for the action -> refused
    breakers    the tool's or the agent's breaker is open -> breaker_open
    budget      the estimate does not fit what is left -> budget_exceeded
    intent      committed to the ledger, then the tool is called
    outcome     ok / failed (a declared business error does not count against
                the breakers), committed with the breakers', budget's and review
                counter's new state

Keys: a call's idempotency key is ``<message id>/<n>`` for the ``n``-th
action the handler of that message asks for (or the ``key=`` given), so a
message redelivered after a crash asks for the same keys and gets the
recorded outcomes back instead of a second effect.  Handlers must therefore
be deterministic in the actions they ask for, as Garrison's handlers are.

Recovery of an intent without an outcome (the process died during the call):
an idempotent tool is called again with the same key; otherwise the tool's
``reconcile`` hook decides (:class:`governance.Tool`); without one the outcome
is ``unknown``, escalated to a human, and recorded: it is never repeated blindly.

Every call that never ran (refused, breaker_open, budget_exceeded) is a
``refusal`` audit record (key, tag, code, reason, message, trace), committed
with the running handler's changes (or on its own outside a handler).

Invariants: at most one outcome per key; the tool is called only after its
intent committed; a refused call leaves no intent.  Times kept in the ledger
(breakers, budget) are wall-clock (``clock``), since they outlive the process;
durations are measured on the monotonic clock.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from governance import NOT_DONE as _NOT_DONE
from governance import (
    Action,
    ActionEvent,
    BehaviourLevel,
    BehaviourMonitor,
    CallResult,
    Decision,
    DecisionCode,
    InterventionKind,
    Observation,
    Outcome,
    OutcomeCode,
    Result,
    Risk,
    Tool,
    ToolError,
    argument_digest,
    as_tool,
    decide,
    intervene,
    parse_grants,
)

from ._agent import Context
from ._approval_desk import ApprovalDesk
from ._breakers import Admitted, Breakers
from ._config import AgentConfig
from ._ledger import TRIM_EVERY, Ledger
from ._spending import Spending
from .exceptions import ConfigError, StateError

__all__ = ["Gateway", "config_digest"]

log = logging.getLogger("garrison.gateway")

#: Decisions that depend only on the action's class, its declared risk, the grants and the policy.
_CONSTANT = frozenset({DecisionCode.EXECUTE, DecisionCode.REFUSE, DecisionCode.PROHIBIT})

def config_digest(config: AgentConfig) -> str:
    """The agent's config version as approvals bind it: its ``config_version`` and a digest of every setting."""
    body = config.model_dump_json().encode()
    return f"{config.config_version}:{hashlib.sha256(body).hexdigest()[:16]}"


class Gateway:
    """Governs one agent's actions (see module docstring)."""

    def __init__(self, *, agent_id: str, config: AgentConfig, tools: Mapping[Any, Any], ledger: Ledger,
                 context: Callable[[], Context | None], lookup: Callable[[str], Any] | None = None,
                 scorer: Callable[[Any], float] | None = None,
                 on_trip: Callable[..., None] = lambda name, why, halt=None: None,
                 hooks: tuple[Callable[[Any], Any], ...] = (), clock: Callable[[], float] = time.time,
                 audit: Callable[[str, dict[str, Any]], None] | None = None, version: str = "",
                 tap: Any = None, count: Callable[[str, str], None] | None = None, spans: Any = None) -> None:
        self.agent_id = agent_id
        self._spans = spans  # OpenTelemetry spans (``_spans``): one per action called
        self._count = count  # each action's tag and outcome code, for the metrics (``_metrics``)
        #: The agent version (manifest hash) it runs; the behaviour monitor keeps a baseline per version.
        self.version = version
        self._behaviour = BehaviourMonitor(config.behaviour) if config.behaviour is not None else None
        self._tap = tap  # the observer tap (``_observer``), or None
        self._on_trip = on_trip
        # Records a refusal in the agent's audit trail, with the running handler's changes (None: audit off).
        self._audit = audit
        self._grants = parse_grants(config.grants)
        self._policy = config.risk_policy
        self.config_version = config_digest(config)
        self._tools: dict[str, Tool] = {cls.type_tag(): as_tool(fn) for cls, fn in tools.items()}
        self._ledger = ledger
        self._context = context
        self._clock = clock
        self._hooks = hooks
        self._approval = ApprovalDesk(agent_id=agent_id, queue=config.approvals, policy=self._policy,
                                      config_version=self.config_version, lookup=lookup, clock=clock)
        # Durable state, as the last commit left it.
        self.breakers = Breakers(agent_id=agent_id, policy=config.breaker, ledger=ledger, drift=config.drift,
                                 scorer=scorer, on_trip=on_trip, policy_on_trip=config.on_trip)
        self._spending = Spending(agent_id=agent_id, policy=config.budget, fleet=config.fleet_budget,
                                  ledger=ledger, lookup=lookup, now=clock())
        self.unreviewed: int = ledger.state("unreviewed", 0)
        # Decisions that depend only on the action's class (see ``_decide``); the grants and policy
        # are fixed for the gateway's life.
        self._constant_decisions: dict[type[Action], Decision] = {}
        self._retention = config.ledger_retention
        self._next_trim = 0.0
        # Which message's actions are being numbered, and how many it has asked for.
        self._numbering: tuple[Context | None, int] = (None, 0)

    # -- the call ------------------------------------------------------------------

    async def act(self, action: Action, *, key: str | None = None, approval: str | None = None,
                  context: str = "") -> Outcome:
        if not isinstance(action, Action):
            raise TypeError(f"act() takes a governance.Action, got {type(action).__name__}")
        key = key or (f"approval:{approval}" if approval else self._next_key())
        if key is None:
            return Outcome.refusal("-", "act() outside a message handler needs key=")
        intent, done = self._ledger.get(key)
        if done is not None:
            return _outcome(done)
        if intent is not None:
            return await self._recover(action, key, intent)
        held, tag = None, action.type_tag()
        if self._hooks and approval is None:
            verdict, action = intervene(self._hooks, ActionEvent(self.agent_id, key, action))
            if verdict.kind is InterventionKind.DROP:
                return self._refused(tag, Outcome.refusal(key, f"dropped by an intervention hook: {verdict.reason}"))
            if not isinstance(action, Action):
                return self._refused(tag, Outcome.refusal(key, f"an intervention hook replaced the action with a "
                                                               f"{type(action).__name__}, not an Action"))
            held = verdict.reason if verdict.kind is InterventionKind.HOLD else None
        decision = self._decide(action)
        if decision.code in (DecisionCode.REFUSE, DecisionCode.PROHIBIT):
            return self._refused(tag, Outcome.refusal(key, decision.reason))
        if held is not None:  # whatever its risk, a person decides
            return self._observe(tag, self._approval.request(action, key, f"held by an intervention hook: {held}",
                                                             context))
        flag = decision.code is DecisionCode.EXECUTE_AND_FLAG
        if approval is not None:
            cleared = await self._approval.cleared(action, approval, key)
            if cleared is not None:
                if not cleared.retryable:  # final (denied, expired, void): a duplicate gets the same answer
                    self._ledger.outcome(key, cleared.model_dump(mode="json"))
                return self._observe(tag, cleared)
            flag = False
        elif decision.code is DecisionCode.NEEDS_APPROVAL:
            return self._observe(tag, self._approval.request(action, key, decision.reason, context))
        tool = self._tools.get(action.type_tag())
        if tool is None:
            return self._refused(tag, Outcome.refusal(key, f"no tool performs {action.type_tag()}; this agent has "
                                                           f"tools for: {', '.join(sorted(self._tools)) or 'none'}"))
        if self._spans is None:
            return await self._admit_and_call(action, key, tool, flag=flag)
        with self._spans.acting(action.type_tag(), key):
            return await self._admit_and_call(action, key, tool, flag=flag)

    def _observe(self, tag: str, outcome: Outcome, seconds: float = 0.0) -> Outcome:
        """``outcome`` of a call, observed by the behaviour monitor (``governance._behaviour``) and the
        observer tap."""
        if self._count is not None:
            self._count(tag, outcome.code.value)
        if self._tap is not None:
            ctx = self._context()
            self._tap.emit("action", ctx.traceparent if ctx is not None else None,
                           {"key": outcome.correlation_id, "tag": tag, "code": outcome.code.value, "seconds": seconds})
        if self._behaviour is None:
            return outcome
        verdict = self._behaviour.observe(self.version, Observation(tag, outcome.code.value, outcome.cost or 0.0,
                                                                    seconds))
        if verdict is not None:
            level, report = verdict
            log.warning("agent %s %s: %s", self.agent_id, level.value, report.why())
            if self._audit is not None:
                self._audit("behaviour", {"level": level.value, "reason": report.why(), **report.describe()})
            if level is BehaviourLevel.PAUSED:
                self._on_trip("behaviour", report.why(), True)
        return outcome

    def _refused(self, tag: str, outcome: Outcome) -> Outcome:
        """``outcome`` (an action that never ran), recorded as a ``refusal`` audit record first."""
        log.info("agent %s: action %s %s: %s", self.agent_id, tag, outcome.code.value, outcome.reason)
        self._observe(tag, outcome)
        if self._audit is not None:
            ctx = self._context()
            self._audit("refusal", {"key": outcome.correlation_id, "tag": tag, "code": outcome.code.value,
                                    "reason": outcome.reason,
                                    "message": ctx.message_id.hex() if ctx is not None else None,
                                    "trace": ctx.traceparent if ctx is not None else None})
        return outcome

    def _decide(self, action: Action) -> Decision:
        """``governance.decide`` for ``action``; its answer is kept per class when nothing in it can
        change between calls: a declared (not computed) risk that runs at once or is refused."""
        cls = type(action)
        decision = self._constant_decisions.get(cls)
        if decision is None:
            decision = decide(action, self._policy, granted=self._grants, unreviewed_medium=self.unreviewed)
            if isinstance(cls.declaration().risk, Risk) and decision.code in _CONSTANT:
                self._constant_decisions[cls] = decision
        return decision

    async def _admit_and_call(self, action: Action, key: str, tool: Tool, *, flag: bool) -> Outcome:
        now = self._clock()
        admitted, why = self.breakers.admit(action.type_tag(), now)
        if why is not None:
            return self._refused(action.type_tag(), Outcome.breaker_tripped(key, why))
        refused = await self._spending.reserve(key, action.estimated_cost(), now)
        if refused is not None:
            self.breakers.release(admitted, now)
            return self._refused(action.type_tag(), Outcome.over_budget(key, refused[0], retryable=refused[1]))
        args = action.model_dump(mode="json")
        try:
            self._ledger.intent(key, tag=action.type_tag(), args=args, digest=argument_digest(action, args),
                                idempotent=action.idempotent, state=self._spending.state())
        except Exception:
            # No intent, no call: give back what the admission took (a probe slot, a reservation).
            self.breakers.release(admitted, now)
            await self._spending.release(key, now)
            raise
        return await self._call(action, key, tool, admitted, flag=flag, defer=action.idempotent)

    async def _call(self, action: Action, key: str, tool: Tool, admitted: Admitted, *, flag: bool,
                    defer: bool = False) -> Outcome:
        started = time.monotonic()
        try:
            value = tool.call(action, idempotency_key=key) if tool.takes_key() else tool.call(action)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome
            business = action.is_business_error(exc)
            # A ToolError knows whether the same call may succeed later; any other failure may.
            retryable = not business and (exc.retryable if isinstance(exc, ToolError) else True)
            outcome = Outcome.failure(key, f"{type(exc).__name__}: {exc}", retryable=retryable,
                                      escalation=None if business else "operator")
            result = CallResult.BUSINESS_ERROR if business else CallResult.FAILURE
            actual: float = 0.0 if business else action.estimated_cost()
        else:
            outcome, actual = _success(key, value, action.estimated_cost())
            result = CallResult.SUCCESS
        duration = time.monotonic() - started
        return self._observe(action.type_tag(), await self._finish(key, outcome, actual, result, duration, admitted,
                                                                   flag=flag, defer=defer), duration)

    async def _finish(self, key: str, outcome: Outcome, actual: float, result: CallResult, duration: float,
                      admitted: Admitted, *, flag: bool, defer: bool = False) -> Outcome:
        """Settle the call and record its outcome (``defer``: an idempotent action's, with the next
        commit; see ``_ledger``)."""
        now = self._clock()
        dirty = self.breakers.record(admitted, result, duration, now)
        state = []
        if outcome.code is OutcomeCode.OK:
            self.breakers.observe(outcome.result, now)
            if flag:
                self.unreviewed += 1
                state.append(("unreviewed", self.unreviewed))
        await self._spending.settle(key, actual, now)
        state += [*self.breakers.state(dirty), *self._spending.state()]
        self._ledger.outcome(key, {**outcome.model_dump(mode="json"), "review": flag}, state, defer=defer)
        return outcome

    def flush(self) -> None:
        """Commit the deferred outcomes (called when a handler returns, before its changes commit);
        every ``TRIM_EVERY`` seconds, trim the ledger past its retention (a failure there is logged)."""
        self._ledger.flush()
        now = self._clock()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY
            try:
                self._ledger.trim(now, self._retention)
            except StateError as exc:
                log.warning("agent %s: trimming the ledger failed (retried in %.0f s): %s",
                            self.agent_id, TRIM_EVERY, exc)

    # -- after a crash -------------------------------------------------------------

    async def _recover(self, action: Action, key: str, intent: dict[str, Any]) -> Outcome:
        if intent["digest"] != argument_digest(action):
            return self._refused(action.type_tag(),
                                 Outcome.refusal(key, f"key {key!r} was used for other arguments ({intent['tag']})"))
        tool = self._tools.get(action.type_tag())
        if tool is not None and intent["idempotent"]:
            log.warning("agent %s: %s in doubt; idempotent, calling again with key %s",
                        self.agent_id, intent["tag"], key)
            return await self._call(action, key, tool, [], flag=False)
        if tool is not None and tool.reconcile is not None:
            try:
                answer = tool.reconcile(action, key)
                if inspect.isawaitable(answer):
                    answer = await answer
            except Exception as exc:  # noqa: BLE001 - the hook failing leaves the outcome unknown
                answer = exc
            if answer is _NOT_DONE:
                return await self._call(action, key, tool, [], flag=False)
            if isinstance(answer, Result):
                outcome, actual = _success(key, answer, action.estimated_cost())
                return await self._finish(key, outcome, actual, CallResult.SUCCESS, 0.0, [], flag=False)
            why = f"reconcile hook answered {answer!r}"
        else:
            why = "not idempotent and no reconcile hook"
        outcome = Outcome.in_doubt(key, f"outcome unknown: the process died during the call ({why}); not repeated")
        return await self._finish(key, outcome, action.estimated_cost(), CallResult.FAILURE, 0.0, [], flag=False)

    # -- state ---------------------------------------------------------------------

    def _next_key(self) -> str | None:
        ctx = self._context()
        if ctx is None:
            return None
        held, n = self._numbering
        n = n + 1 if held is ctx else 1
        self._numbering = (ctx, n)
        return f"{ctx.message_id.hex()}/{n}"

    def reset_breaker(self, name: str, who: str) -> dict[str, Any]:
        """Close breaker ``name`` (an operator's call); ConfigError if the agent has no such breaker.

        ``behaviour``: the operator reviewed a behaviour flag; the version starts a fresh baseline.
        """
        if name == "behaviour" and self._behaviour is not None:
            self._behaviour.reset(self.version)
            log.warning("agent %s: behaviour monitor reset by %s", self.agent_id, who)
            return self.breakers.status()
        try:
            state = self.breakers.reset(name, who, self._clock())
        except KeyError:
            raise ConfigError(f"agent {self.agent_id!r} has no breaker {name!r}; it has: "
                              f"{', '.join(self.breakers.status()['breakers']) or 'none'}", breaker=name) from None
        self._ledger.save(state)
        log.warning("agent %s: breaker %s reset by %s", self.agent_id, name, who)
        return self.breakers.status()

    def ledger(self, *, limit: int = 100, tag: str | None = None, in_doubt: bool = False) -> list[dict[str, Any]]:
        """Intents with their outcomes, oldest first, the newest ``limit`` (``in_doubt``: only those without one)."""
        if in_doubt:
            found = [e for e in self._ledger.in_doubt() if tag is None or e["tag"] == tag]
            return found[-limit:] if limit else found
        return self._ledger.entries(limit=limit, tag=tag)

    def review(self, count: int | None = None) -> int:
        """Mark ``count`` (None: all) unreviewed medium actions reviewed; the number left."""
        self.unreviewed = 0 if count is None else max(0, self.unreviewed - count)
        self._ledger.save([("unreviewed", self.unreviewed)])
        return self.unreviewed

    def status(self) -> dict[str, Any]:
        return {
            "grants": sorted(self._grants),
            "tools": sorted(self._tools),
            "risk_policy_version": self._policy.version,
            "config_version": self.config_version,
            **self.breakers.status(),
            **self._spending.status(self._clock()),
            "unreviewed_medium": self.unreviewed,
            "in_doubt": self._ledger.in_doubt_count(),
            "behaviour": None if self._behaviour is None else self._behaviour.status(self.version),
        }


def _success(key: str, value: Any, estimate: float) -> tuple[Outcome, float]:
    partial, cost = False, None
    if isinstance(value, Result):
        value, cost, partial = value.value, value.cost, value.partial
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    actual = estimate if cost is None else cost
    return Outcome.success(key, value, partial=partial, cost=actual), actual


def _outcome(record: dict[str, Any]) -> Outcome:
    return Outcome.model_validate({k: v for k, v in record.items() if k in Outcome.model_fields})
