"""Operators' feedback on decisions: annotations in the audit log, exported with their provenance.

An annotation says what a person thought of one decision (``Agent.decide``): a
``label`` from :data:`LABELS` and a free ``note``, with who gave it.  It is an
audit record of kind ``feedback`` (``decision``, ``label``, ``note``, ``who``, ``auth``),
committed to the agent's journaled ``audit`` table like every other record, so it
reaches the signed log and survives crashes; it never changes the decision it
annotates (both stay in the log, in order).

:func:`export_rows` joins annotations with the decisions they name: one row per
annotation, carrying the decision's whole provenance (message, trace, options,
choice, rationale, context digest and, when kept, the context, actions), ready to
be written as JSONL and become evaluation or training data.

Invariants: only a recorded decision can be annotated (checked before the commit);
a decision annotated twice gives two rows, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ._audit import AuditTrail, audit_op
from ._store import LmdbStore, Op
from .exceptions import FeedbackError

__all__ = ["LABELS", "FeedbackDesk", "export_rows", "feedback_op"]

#: What a person can say of a decision.
LABELS = ("correct", "wrong", "near_miss", "right_for_wrong_reason")


def feedback_op(decision: str, label: str, note: str, who: str, now: float, auth: str = "unverified") -> Op:
    """The audit record of one annotation (raises FeedbackError for an unknown label or no ``who``).

    ``auth``: how ``who`` was established (``runtime._gatekeeper``).
    """
    if label not in LABELS:
        raise FeedbackError(f"unknown feedback label {label!r}; one of: {', '.join(LABELS)}", label=label)
    if not who.strip():
        raise FeedbackError("feedback needs who gave it", decision=decision)
    return audit_op("feedback", {"decision": decision, "label": label, "note": note, "who": who, "auth": auth}, now)


def export_rows(agent_id: str, decisions: Iterable[dict[str, Any]],
                annotations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per annotation, oldest first, with the provenance of the decision it names.

    ``decisions`` and ``annotations`` are audit records as :meth:`AuditTrail.records`
    gives them (body fields plus ``time``, ``index``, ``seq``).  An annotation whose
    decision is not among ``decisions`` keeps ``provenance: None``.
    """
    by_id = {d["id"]: d for d in decisions}
    return [{"agent": agent_id, "decision": a["decision"], "label": a["label"], "note": a["note"],
             "who": a["who"], "auth": a.get("auth", "unverified"), "time": a["time"], "index": a["index"], "provenance": by_id.get(a["decision"])}
            for a in annotations]


class FeedbackDesk:
    """One agent's annotations: recorded through its store, read back from its audit trail."""

    def __init__(self, agent_id: str, trail: AuditTrail | None, store: LmdbStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.agent_id = agent_id
        self._trail = trail  # None: audit off, and nothing to annotate
        self._store = store
        self._clock = clock

    def _require_trail(self) -> AuditTrail:
        if self._trail is None:
            raise FeedbackError(f"agent {self.agent_id!r} keeps no audit log (AgentConfig.audit=False): "
                                "its decisions are not recorded, so there is nothing to annotate",
                                agent_id=self.agent_id)
        return self._trail

    def annotate(self, decision: str, label: str, note: str, who: str, auth: str = "unverified") -> dict[str, Any]:
        """Record ``who``'s ``label`` and ``note`` on recorded decision ``decision``; the record's body."""
        trail = self._require_trail()
        now = self._clock()
        op = feedback_op(decision, label, note, who, now, auth)
        if not any(d["id"] == decision for d in trail.records("decision", limit=0)):
            raise FeedbackError(f"agent {self.agent_id!r} recorded no decision {decision!r}",
                                agent_id=self.agent_id, decision=decision)
        self._store.commit([op], now=now)
        return {"agent": self.agent_id, "decision": decision, "label": label, "note": note, "who": who,
                "auth": auth, "time": now}

    def export(self, limit: int = 0) -> list[dict[str, Any]]:
        """The newest ``limit`` annotations (0: all), oldest first, each with its decision's provenance."""
        trail = self._require_trail()
        return export_rows(self.agent_id, trail.records("decision", limit=0),
                           trail.records("feedback", limit=limit))
