"""Operators' calls on one agent: status, checkpoints, history, kill switch, quarantine, dead letters.

Reached as ``ref.admin`` from an ``AgentRef``; the ref itself keeps only the
data plane (tell, ask, flush).  Both share the ref's :class:`Route`, so an
operator's call and an ask agree on which host serves the agent.

Unlike an ask, an operator's call does not wait for a restart: it is made to
the host the directory names now, once more if that host died between the
lookup and the call, and otherwise fails at once (AgentUnavailable).
"""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from audit import OperatorKey

from ._boundary import creation_failed, from_ray
from ._gatekeeper import credential_for
from ._route import DEFAULT_TIMEOUT, Route
from .exceptions import AskTimeout

__all__ = ["AgentAdmin"]

#: Who makes an operator's call: their key (signs it), or, without an operators file, a name.
Who = OperatorKey | str


class AgentAdmin:
    """Operators' calls on one agent, made to its current host (``ref.admin``)."""

    def __init__(self, route: Route) -> None:
        self._route = route

    @property
    def agent_id(self) -> str:
        return self._route.agent_id

    def __repr__(self) -> str:
        return f"AgentAdmin({self._route.agent_id!r})"

    def _call(self, method: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """An operator's call, made to the agent's current host.

        The host is looked up anew first (the agent may have moved to a spare
        or another node since this ref last spoke to it, and a replaced host
        that is still alive answers only for itself: a kill switch pulled
        there would stop nothing).  It does not wait for a restart: while no
        host serves the agent, AgentUnavailable at once.
        """
        route = self._route
        route.follow()
        for last in (False, True):
            try:
                return ray.get(getattr(route.handle, method).remote(*args), timeout=timeout)
            except GetTimeoutError as exc:
                raise AskTimeout(f"{method} on {route.agent_id!r} got no reply in {timeout}s", where="caller") from exc
            except RayActorError as exc:
                # Died between the lookup and the call: once more, if a new host is there.
                if last or creation_failed(exc) or not route.follow():
                    raise from_ray(exc, route.agent_id, what=method) from exc
            except RayTaskError as exc:  # the host raised one of ours: as itself, not Ray's wrapper
                raise from_ray(exc, route.agent_id, what=method) from exc
        raise AssertionError("unreachable")

    def status(self, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Lifecycle state, incarnation, pid, sequence numbers, last checkpoint, last restore."""
        return self._call("status", timeout=timeout)

    def describe(self, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The host's one-line description, as the Ray dashboard and Ray's log prefixes show it."""
        return self._call("describe", timeout=timeout)

    def checkpoint(self, *, timeout: float = 120.0) -> dict[str, Any] | None:
        """Take a checkpoint now; returns its manifest."""
        return self._call("checkpoint", True, timeout=timeout)

    def restore_history(self, *, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """Restore reports of the agent's recent incarnations, oldest first."""
        return self._call("restore_history", timeout=timeout)

    def transitions(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """State-transition records (agent, seq, time, op, key) after ``after_seq``, in seq order.

        The whole history within ``transition_retention``: recent records from the
        agent's LMDB, older ones from the segments shipped to the checkpoint store.
        """
        return self._call("transitions", after_seq, limit)

    def metrics(self) -> str:
        """The agent's Prometheus metrics, in text exposition format."""
        return self._call("metrics")

    def inspect(self, transitions: int = 20, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Everything an operator looks at first, in one call: status, config, the agent version's
        manifest, the newest ``transitions`` state transitions and the restore history."""
        return self._call("inspect", transitions, timeout=timeout)

    def logs(self, offset: int | None = None, limit: int = 200, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The host process's log (Ray's worker log file, where the agent's JSON lines go).

        ``offset`` None: its last ``limit`` lines; else the lines after byte ``offset``
        (at most ``limit``).  Returns ``{"file", "offset", "lines"}``: each line parsed
        when it is one of Garrison's JSON lines, else ``{"message": text}``; ``offset``
        is where the next call continues (``garrison logs --follow``).
        """
        return self._call("logs", offset, limit, timeout=timeout)

    def _operate(self, action: str, who: Who, **args: Any) -> Any:
        """An operator's call: ``who`` signs it for this agent if it is an ``audit.OperatorKey``."""
        return self._call("operate", action, credential_for(who, action, self._route.agent_id), args)

    def halt(self, who: Who, why: str) -> dict[str, Any]:
        """Kill switch for this agent: nothing handled or sent until ``unhalt``; survives restarts.

        ``who`` here and in every operator call below: an ``audit.OperatorKey``
        (required when the agent has an operators file, ``AgentConfig.operators``),
        or a name (recorded as ``unverified``).
        """
        return self._operate("halt", who, why=why)

    def unhalt(self, who: Who, why: str = "") -> dict[str, Any]:
        """Lift this agent's kill switch (recorded with who and why); it resumes unless quarantined."""
        return self._operate("unhalt", who, why=why)

    def quarantine(self, who: Who, why: str) -> dict[str, Any]:
        """Stop this agent handling (messages refused, state kept) until ``release``; survives restarts.

        For a supervised agent prefer its supervisor's ``quarantine`` (or
        ``supervisors.quarantine``), so the supervisor stops probing it too.
        """
        return self._operate("quarantine", who, why=why)

    def release(self, who: Who, why: str = "") -> dict[str, Any]:
        """Lift this agent's quarantine (recorded with who and why): it handles messages again."""
        return self._operate("release", who, why=why)

    def review_actions(self, who: Who, count: int | None = None) -> dict[str, Any]:
        """``who`` reviewed the medium-risk actions flagged for review (``count`` of them; None: all)."""
        return self._operate("review", who, count=count)

    def reset_breaker(self, name: str, who: Who) -> dict[str, Any]:
        """Close one of the agent's breakers: ``agent``, a tool's action tag, or ``drift``."""
        return self._operate("reset_breaker", who, name=name)

    def ledger(self, *, limit: int = 100, tag: str | None = None, in_doubt: bool = False) -> list[dict[str, Any]]:
        """The agent's governed actions: each intent with its outcome (None while in doubt), oldest first.

        ``tag`` keeps one action type (``shop.refund@1``); ``in_doubt`` only the
        intents without an outcome (a call in flight, or one a crash interrupted).
        """
        return self._call("ledger", limit, tag, in_doubt)

    def operator_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest operator actions on this agent (action, who, auth, why, time), oldest first."""
        return self._call("operator_log", limit)

    def decisions(self, *, trace: str | None = None, since: float | None = None, until: float | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` decisions (``Agent.decide``), oldest first: of one ``trace`` (a
        ``traceparent``), in ``[since, until)`` (Unix times); from the audit log and what is not in it yet.

        Each carries its ``index`` in the log (None: not shipped yet), ``seq``, ``time`` and what was recorded.
        """
        return self._call("decisions", trace, since, until, limit)

    def versions(self) -> list[dict[str, Any]]:
        """The agent versions it ran under, oldest first: each ``manifest`` audit record (``hash``,
        ``manifest``, ``incarnation``, ``time``, ``index``), recorded when an incarnation started under
        another version than the last.  ``status()["version"]`` is the current one."""
        return self._call("versions")

    def annotate(self, decision: str, label: str, *, who: Who, note: str = "") -> dict[str, Any]:
        """``who`` says what they think of recorded decision ``decision`` (its ``id``): ``label`` one of
        ``correct``, ``wrong``, ``near_miss``, ``right_for_wrong_reason``; kept in the audit log."""
        return self._operate("annotate", who, decision=decision, label=label, note=note)

    def feedback(self, *, limit: int = 0) -> list[dict[str, Any]]:
        """The newest ``limit`` annotations (0: all), oldest first, each joined with the provenance of
        its decision (``provenance``: the decision record as :meth:`decisions` gives it)."""
        return self._call("feedback", limit)

    def dead_letters(self, *, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Dead letters kept by the agent, oldest first (optionally of one reason)."""
        return self._call("dead_letters", reason, limit)

    def replay_dead_letters(self, *, ids: list[str] | None = None, reason: str | None = None,
                            timeout: float = 120.0) -> list[dict[str, Any]]:
        """Deliver dead letters again: the given ids, or all of a reason."""
        if not ids and not reason:
            raise ValueError("name the dead letters to replay: ids=[...] or reason=...")
        return self._call("replay_dead_letters", ids, reason, timeout=timeout)
