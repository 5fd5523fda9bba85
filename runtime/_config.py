"""Configuration of agents and systems: frozen data with documented defaults."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from governance import BehaviourPolicy, BreakerPolicy, BudgetPolicy, DriftPolicy, RiskPolicy
from protocols import field_errors

from .exceptions import ConfigError

__all__ = ["AgentConfig", "Durability", "validated"]


class Durability(enum.Enum):
    """When a handled message counts as durable beyond this node.

    ASYNC  committed to the agent's local LMDB before the reply; shipped to the
           checkpoint store within ``ship_interval``.  Losing the node loses at
           most that window.
    SYNC   the journal is shipped (written and fsynced in the checkpoint store)
           before the reply, and before anything the handler sent leaves; losing
           the node loses nothing acknowledged, and no receiver has acted on a
           message its sender forgot.  A failed shipment answers ``NotDurable``.
    """

    ASYNC = "async"
    SYNC = "sync"


class AgentConfig(BaseModel):
    """Per-agent settings.  Every default is the production default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Seconds between full checkpoints (also taken on a graceful stop).
    checkpoint_interval: float = Field(30.0, gt=0)
    #: Seconds between shipments of new journal entries to the checkpoint store.
    ship_interval: float = Field(1.0, gt=0)
    #: Journal entries are kept this long past the newest checkpoint's time.
    journal_retention: float = Field(30.0, ge=0)
    #: Seconds the checkpoint store keeps shipped state-transition segments
    #: (``ref.admin.transitions`` history; locally only about one checkpoint interval
    #: of it is kept).  Default 30 days; whole segments are deleted, oldest first.
    transition_retention: float = Field(30 * 86400.0, ge=0)
    #: How many checkpoints the store keeps per agent.
    keep_checkpoints: int = Field(3, ge=1)
    durability: Durability = Durability.ASYNC
    #: Replies remembered for effectively-once deduplication, in seconds.
    dedup_horizon: float = Field(600.0, gt=0)
    #: Largest envelope accepted, in bytes.
    max_message_bytes: int = Field(1 << 20, gt=0)
    #: LMDB map size (address space reserved, not disk used), in bytes.
    map_size: int = Field(8 << 30, gt=1 << 20)
    #: fsync every local LMDB commit.  Off by default: a process crash loses
    #: nothing without it, and SYNC durability covers the node.
    lmdb_sync: bool = False
    #: Free-form version of the agent's own configuration, recorded in manifests.
    config_version: str = "1"
    #: Restore reports kept in the agent's metadata.
    restore_history: int = Field(20, ge=1)
    #: Messages this agent keeps in flight per recipient (its memory bound
    #: for sending, and the flow-control window a slow receiver pushes back on).
    window: int = Field(20_000, ge=1)
    #: Largest number of messages coalesced into one call to one recipient.
    max_batch: int = Field(5000, ge=1)
    #: Seconds the dispatcher lets new sends gather while calls are in flight.
    linger: float = Field(0.002, ge=0)
    #: Failed delivery attempts in a row before a recipient's pending messages
    #: go to dead letters (0: never give up).
    max_attempts: int = Field(100, ge=0)
    #: Seconds a graceful stop waits for the outbox to be delivered, retries included (0: not at all;
    #: within a supervisor's 5 s stop budget).  What is left stays in the outbox, sent at the next start.
    stop_drain: float = Field(3.0, ge=0)
    #: Base and cap of the exponential backoff (full jitter) between attempts.
    retry_backoff: float = Field(0.05, gt=0)
    retry_backoff_max: float = Field(5.0, gt=0)
    #: Dead letters kept; the oldest are trimmed past this.
    dead_letter_limit: int = Field(100_000, ge=1)

    # -- governed actions (``_gateway``) --
    #: Capabilities this agent's actions may use, deny by default: exact
    #: (``"payments.refund"``) or everything under a prefix (``"crm.*"``).
    grants: tuple[str, ...] = ()
    #: Risk classes, review limit and approval rules (versioned data).
    risk_policy: RiskPolicy = RiskPolicy(version="1")
    #: The circuit breakers', one per tool and one for the whole agent.
    breaker: BreakerPolicy = BreakerPolicy()
    #: The agent's own cost budget (None: no budget).
    budget: BudgetPolicy | None = None
    #: The id of the approval queue agent (``runtime.ApprovalQueue``) that high-risk actions wait in.
    approvals: str | None = None
    #: The id of a fleet budget agent (``runtime.FleetBudget``) this agent's calls also draw from.
    fleet_budget: str | None = None
    #: The semantic breaker: trips when the agent class's ``drift_scorer`` finds recent results drifting.
    drift: DriftPolicy | None = None
    #: Behavioural drift (``governance._behaviour``): the agent's recent actions (mix, outcome codes,
    #: cost, latency) against a baseline of its own version; flagged for review past ``flag_at``,
    #: paused (the kill switch) past ``pause_at``.  None: not watched.
    behaviour: BehaviourPolicy | None = None
    #: What a tripped breaker does besides telling operators: ``notify`` only, or ``halt`` (the kill switch).
    on_trip: Literal["notify", "halt"] = "notify"
    #: Seconds a governed action's ledger entry (intent and outcome) is kept once it has its outcome:
    #: within it, a message redelivered or an approval resumed gets the recorded outcome back (keep it
    #: above the longest approval time to live and redelivery horizon). In-doubt intents are kept.
    ledger_retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: Intervention hooks on every message and action, ``"module:function"`` each
    #: (``governance.Intervention``); ``System(interventions=...)`` adds them to every agent it spawns.
    interventions: tuple[str, ...] = ()

    # -- the audit trail (``_audit``) --
    #: Record every message handled, decision and operator action in the agent's audit log
    #: (``<checkpoint_dir>/<agent_id>/audit/``).  Off: nothing is recorded, ``decide`` included.
    audit: bool = True
    #: The Ed25519 key file (``garrison audit keygen``) that signs the log's checkpoints, readable
    #: on every node that may host the agent; None: an unsigned log (a chain and a tree only:
    #: ``garrison audit verify`` then cannot tell a log cut short from one that ended there).
    audit_key: str | None = None
    #: The key's name, as given to ``garrison audit keygen`` (it is part of each signature).
    audit_key_name: str = "garrison"
    #: A signed checkpoint every this many records, and at least every ``checkpoint_interval``.
    audit_checkpoint_every: int = Field(1000, ge=1)

    # -- metrics (``_metrics``, ``_export``) --
    #: Count and time each message handled (``garrison_messages_total{outcome="handled"}``,
    #: ``garrison_handle_seconds``).  Off: not those two (every other metric still is); what
    #: they cost is in the README (``python -m benchmarks.runner metrics_overhead``).
    metrics: bool = True

    # -- logs (``_logs``) --
    #: How the agent's host writes the ``garrison`` loggers to its stderr (Ray's worker log):
    #: ``json``, one object per line with agent, incarnation, message and trace ids; or ``text``.
    log_format: Literal["json", "text"] = "json"
    #: The ``garrison`` loggers' level in the agent's process; ``debug`` logs every message handled.
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # -- spans (``_spans``) --
    #: A file the agent's process appends its OpenTelemetry spans to, one JSON line each (a span
    #: per message handled and per governed action, linked across agents); None: no spans.
    spans: str | None = None

    # -- the observer (``_observer``) --
    #: An observer agent's id: this agent sends it a copy of every message handled, decision and
    #: action settled, through a bounded queue that never blocks it (overflow is counted).
    observer: str | None = None
    #: How many events wait for the observer at most; past it they are dropped and counted.
    observer_queue: int = Field(10_000, ge=1)

    # -- accountability (``_gatekeeper``) --
    #: The operators file (TOML: names, roles, Ed25519 keys; see ``audit._operators``), readable on
    #: every node that may host the agent.  Set: operators' calls on this agent (kill switch,
    #: quarantine, release, review, breaker reset, annotation; approvals on an approval queue) must
    #: be signed by an operator whose role grants them.  None: ``who`` is free text, recorded unverified.
    operators: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if self.ship_interval > self.checkpoint_interval:
            raise ValueError("ship_interval must not exceed checkpoint_interval")
        return self


def validated(model: type[BaseModel], value: object) -> BaseModel:
    """Validate config data into ``model``, translating pydantic's error."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value or {})
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ConfigError(
            f"invalid {model.__name__}: "
            + "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors),
            errors=errors,
        ) from exc
