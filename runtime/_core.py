"""One agent incarnation's host logic, wired from collaborators that each own one concept.

``AgentHost`` (the Ray actor) is a thin shell around one :class:`AgentCore`.
Ray appears here only through the ``resolve`` callable (finding a peer's
handle to send to); without it the core runs, and is tested, in-process.

The rooms, and who owns what:

================  ==============================================================
``_incarnation``  host lock, epoch claim, sweep, restore, metadata: the files
``_inbox``        single messages and outbox batches: dedup, pair order, deadlines
``_invoke``       the agent object and calling its handlers and hooks
``_transaction``  what one handler call changes, sends and records
``_committer``    the one LMDB commit, SYNC gating, at-most-once sends
``_outbox``       the durable outbox (``Dispatcher``) and its sender thread
``_background``   shipping, checkpoints, degraded state, on a low-priority thread
``_operations``   operators' calls: dead letters, quarantine, the kill switch
``_gateway``      governed actions: grants, risk, breakers, budget, the ledger
================  ==============================================================

A message's walk: ``AgentHost.deliver`` -> :meth:`Inbox.deliver` (decode,
refuse, dedup) -> :meth:`Invoker.handle` (the handler, staging into the
:class:`Transaction`) -> :meth:`Committer.commit` (one LMDB transaction:
state, records, outbox rows) -> ``Dispatcher`` (sends to the peer).

The core owns the lifecycle (:class:`Lifecycle`, shared read-only with the
collaborators, which change it only through ``set``), the handling lock, the
start hooks and the stop.  Invariants:

* Messages are handled one at a time (the handling lock).
* One live host per agent id per data directory (``HostLock``).
* Fencing: the host claims its epoch before it restores; once a later epoch
  exists, this incarnation commits, ships, checkpoints and sends nothing more
  (state FENCED), and receivers refuse its messages.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ._agent import Agent
from ._audit import DecisionRecorder, open_trail, segment_op, staged_recorder
from ._background import Background
from ._checkpoint import Checkpointer
from ._codec import unpack
from ._committer import Committer
from ._config import Durability
from ._fence import PeerEpochs
from ._gatekeeper import RUNTIME, Gatekeeper
from ._gateway import Gateway
from ._hooks import MessageHooks, load_hooks
from ._inbox import Inbox
from ._incarnation import Incarnation, start_incarnation
from ._invoke import Invoker
from ._journal import Shipper
from ._ledger import Ledger
from ._lifecycle import AgentState, Lifecycle
from ._metrics import AgentMetrics
from ._observer import observer_tap
from ._operations import HALT_KEY, QUARANTINE_KEY, Operations
from ._outbox import Dispatcher
from ._spans import open_spans
from ._spec import HostSpec
from ._state import State
from ._transaction import Transaction
from ._transitions import TransitionLog
from ._version import agent_manifest, record_version
from .exceptions import AgentStartError, Fenced

__all__ = ["AgentCore"]

log = logging.getLogger("garrison.agent")


class AgentCore:
    """One agent incarnation's host logic (see module docstring)."""

    def __init__(self, spec: HostSpec, *, resolve: Callable[[str], Any] | None = None,
                 lookup: Callable[..., Any] | None = None, incarnation: Incarnation | None = None) -> None:
        """Start an incarnation of ``spec``'s agent.

        ``resolve(agent_id)`` finds a peer's actor handle (the outbox sends
        there); ``lookup(agent_id, sender=..., epoch=...)`` builds the refs
        ``Agent.lookup`` returns.  Both are None in-process.  ``incarnation``:
        files already opened and fenced (a packed agent resumed, ``_activation``).
        """
        self.spec = spec
        #: Done once the agent has stopped gracefully, with its final status (any thread may wait on it).
        self.stopped: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.config = cfg = spec.config
        # Nothing can observe this core before it exists: it starts out restoring.
        self._lifecycle = Lifecycle(AgentState.RESTORING)
        self.metrics = AgentMetrics(spec.agent_id, per_message=spec.config.metrics)
        inc = self.incarnation_files = incarnation or start_incarnation(spec)
        self.agent_id, self.epoch, self.fence = inc.agent_id, inc.epoch, inc.fence
        self.ckstore, self.store, self.restore_report = inc.ckstore, inc.store, inc.restore_report
        self.incarnation = inc.number
        self.metrics.restores.labels(self.agent_id, self.restore_report.source).inc()
        try:
            agent: Agent = spec.agent_cls(**spec.init)  # type: ignore[misc]
        except Exception as exc:
            inc.close()
            raise AgentStartError(
                f"{spec.class_path}({', '.join(spec.init)}) raised {type(exc).__name__}: {exc}",
                agent_id=self.agent_id,
            ) from exc
        self.state = State(self.store)
        self._txn = Transaction(self.state)
        self.gatekeeper = Gatekeeper(cfg.operators, (self.agent_id,))  # admits operators' calls on it
        tap, spans = observer_tap(cfg, self.agent_id, lookup), open_spans(self.agent_id, cfg.spans)  # observer, OTel
        try:
            hooks = load_hooks(cfg.interventions)
            self.audit = open_trail(cfg, self.ckstore, self.store, self.agent_id, self.fence.check)
            self.version = record_version(self.store, self.audit is not None,  # the agent version's manifest hash
                                          agent_manifest(spec.class_path, type(agent), cfg), inc.number, time.time())
            self.gateway = Gateway(agent_id=self.agent_id, config=cfg, tools=type(agent).tools, context=lambda: agent.context,
                                   ledger=Ledger(self.store, agent_id=self.agent_id, audited=self.audit is not None),
                                   lookup=agent.lookup if lookup is not None else None,
                                   scorer=type(agent).drift_scorer, on_trip=lambda *trip: self._operations.tripped(*trip),
                                   hooks=hooks, audit=staged_recorder(self._txn.record if self.audit else None, self.store.commit),
                                   version=self.version, tap=tap, count=self.metrics.action, spans=spans)
        except Exception as exc:
            inc.close()
            raise AgentStartError(f"{spec.class_path}: its tools, hooks, governance or audit settings are wrong: "
                                  f"{type(exc).__name__}: {exc}", agent_id=self.agent_id) from exc
        self._invoker = Invoker(agent, agent_id=self.agent_id, state=self.state, send=self._txn.send,
                                lookup=None if lookup is None else
                                functools.partial(lookup, sender=self.agent_id, epoch=self.epoch),
                                gateway=self.gateway, hooks=MessageHooks(self.agent_id, hooks) if hooks else None,
                                after=self.gateway.flush, decide=DecisionRecorder(
                                    self._txn.record if self.audit else None, lambda: agent.context, tap),
                                gatekeeper=self.gatekeeper, tap=tap, spans=spans)
        self.agent = agent
        # Under SYNC, what the restored outbox holds leaves once shipped (a copy restored
        # from this node may hold commits a crash kept from shipping).
        self.dispatcher = Dispatcher(self.store, agent_id=self.agent_id, config=cfg, resolve=resolve,
                                     on_error=self._peer_refused, epoch=self.epoch,
                                     held_until=self.store.seq if cfg.durability is Durability.SYNC else None)
        self.shipper = Shipper(self.store, self.ckstore, self.agent_id, fence=self.fence.check, epoch=self.epoch,
                               on_shipped=self.dispatcher.shipped)
        self.transition_log = TransitionLog(self.store, self.ckstore, self.agent_id,
                                            retention=cfg.transition_retention, epoch=self.epoch,
                                            fence=self.fence.check, on_shipped=None if self.audit is None else
                                            lambda info, n, body: self.store.defer([segment_op(info, n, body, time.time())]))
        self.checkpointer = Checkpointer(
            self.store, self.ckstore, self.shipper,
            agent_id=self.agent_id, agent_class=spec.class_path, config_version=cfg.config_version,
            keep=cfg.keep_checkpoints, retention=cfg.journal_retention, version=self.version,
            summarize=agent.summary if type(agent).summary is not Agent.summary else None,
            fence=self.fence.check, epoch=self.epoch, transitions=self.transition_log,
        )
        self._lock = threading.RLock()
        self._started = False
        common = {"agent_id": self.agent_id, "metrics": self.metrics, "lifecycle": self._lifecycle}
        self._committer = Committer(config=cfg, epoch=self.epoch, store=self.store, fence=self.fence,
                                    dispatcher=self.dispatcher, shipper=self.shipper, resolve=resolve, **common)
        self._inbox = Inbox(config=cfg, store=self.store, lock=self._lock, txn=self._txn, invoker=self._invoker,
                            committer=self._committer, fence=self.fence, peer_epochs=PeerEpochs(self.ckstore),
                            on_fenced=self._fenced, audited=self.audit is not None, **common)
        self._background = Background(config=cfg, store=self.store, shipper=self.shipper,
                                      checkpointer=self.checkpointer, on_fenced=self._fenced, audit=self.audit,
                                      **common)
        self._operations = Operations(config=cfg, store=self.store, lock=self._lock, txn=self._txn,
                                      inbox=self._inbox, committer=self._committer, dispatcher=self.dispatcher,
                                      final_checkpoint=self._background.final_checkpoint,
                                      audited=self.audit is not None, **common)
        self._background.start()

    # -- the lifecycle ---------------------------------------------------------------

    @property
    def lifecycle(self) -> AgentState:
        return self._lifecycle.state

    @property
    def failure(self) -> str | None:
        return self._lifecycle.failure

    @property
    def degraded(self) -> Any:
        """The background work's current and last degraded episodes (``_degraded.DegradedState``)."""
        return self._background.degraded

    @property
    def background_error(self) -> str | None:
        return self._background.background_error

    def ensure_started(self) -> None:
        """Run the start hooks once per incarnation, then start sending."""
        if self._started:  # set once, under the lock: a True read needs no lock
            return
        with self._lock:
            if self._started:
                return
            self._started = True
            try:
                if self.restore_report.source != "fresh":
                    self._inbox.run_hook(self.agent.on_restore, self.restore_report)
                self._inbox.run_hook(self.agent.on_start)
            except Exception as exc:
                self._lifecycle.set(AgentState.FAILED, f"on_start raised {type(exc).__name__}: {exc}")
                log.exception("agent %s failed to start", self.agent_id)
                return
            halted = self.store.get("control", HALT_KEY)
            quarantined = self.store.get("control", QUARANTINE_KEY)
            if halted is not None:  # a kill switch outlives the incarnation that saw it
                record = unpack(halted)
                self._lifecycle.set(AgentState.HALTED, f"halted by {record['who']}: {record['why']}")
                return
            if quarantined is not None:  # so does a quarantine: handle nothing until released
                self._lifecycle.set(AgentState.QUARANTINED, f"quarantined: {unpack(quarantined)['why']}")
            else:
                self._lifecycle.set(AgentState.RUNNING)
            self.dispatcher.shipped(self.shipper.shipped)
            self.dispatcher.start()

    def _fenced(self, exc: Fenced) -> None:
        """This incarnation was replaced: stop acting for good (any thread that finds out calls this)."""
        if self._lifecycle.state is not AgentState.FENCED:
            self._lifecycle.set(AgentState.FENCED, f"fenced: {exc.message}")
            self.metrics.outcome("fenced")
            log.warning("agent %s epoch %s fenced: %s", self.agent_id, self.epoch, exc.message)
        self.dispatcher.stop(timeout=0)
        self._background.stop(wait=False)
        if self.audit:  # let go of the log's lock: the incarnation that replaced this one writes it now
            self.audit.close()

    def _peer_refused(self, recipient: str, errors: list[Any]) -> None:
        for seq, code, message in errors:
            self.metrics.outcome(f"refused_by_peer_{code}")
            log.warning("agent %s: %s refused seq %s: %s: %s", self.agent_id, recipient, seq, code, message)

    # -- messages ---------------------------------------------------------------------

    def deliver(self, raw: bytes) -> bytes:
        """Handle one wire envelope; always returns a reply, never raises for bad input."""
        self.ensure_started()
        return self._inbox.deliver(raw)

    def deliver_batch(self, blob: bytes) -> bytes:
        """Handle an outbox batch in seq order with one group commit; reply ``[hwm, errors]``."""
        self.ensure_started()
        return self._inbox.deliver_batch(blob)

    # -- introspection ----------------------------------------------------------------

    def probe(self) -> dict[str, Any]:
        """The cheap subset of status a liveness probe needs (answered off the handling thread)."""
        return {
            "state": self._lifecycle.state.value,
            "incarnation": self.incarnation,
            "epoch": self.epoch,
            "pid": os.getpid(),
            "handler_running_for": self._invoker.running_for(),
            # None, or the current episode of failing background work (``_degraded``).
            "degraded": self._background.degraded.probe(),
            # None, or how many breakers tripped in this incarnation and the newest trip (``_breakers``).
            "breaker_trips": self.gateway.breakers.tripped(),
        }

    def status(self) -> dict[str, Any]:
        last = self.checkpointer.last
        open_ = self._lifecycle.state is not AgentState.STOPPED
        return {
            **self.probe(),
            "agent_id": self.agent_id,
            "agent_class": self.spec.class_path,
            "version": self.version,
            "seq": self.store.seq,
            "shipped_seq": self.shipper.shipped,
            "journal_entries": self.store.count("journal") if open_ else None,
            "transition_entries": self.store.count("transitions") if open_ else None,
            "transitions_shipped_seq": self.transition_log.shipped,
            "last_checkpoint_seq": last.seq if last else None,
            "last_checkpoint_time": last.time if last else None,
            "checkpoints_taken": self.checkpointer.taken,
            "outbox_pending": self.dispatcher.pending(),
            "outbox_in_memory": self.dispatcher.in_memory(),
            "delivered": self.dispatcher.delivered,
            "dead_letters": self.store.count("deadletters") if open_ else None,
            "background_error": self._background.background_error,
            **self._background.degraded.status(),  # degraded (current episode), degraded_cleared (last ended one)
            "failure": self._lifecycle.failure,
            "restore": self.restore_report.model_dump(mode="json"),
            "governance": self.gateway.status() if open_ else None,
            "audit": self.audit.status() if self.audit else None,
        }

    def restore_history(self) -> list[dict[str, Any]]:
        return list(self.store.meta("restores", []))

    def checkpoint(self, *, force: bool = False, where: str = "checkpoint") -> dict[str, Any] | None:
        """Ship the journal, then take a checkpoint; returns its manifest (None if nothing changed)."""
        return self._background.checkpoint(force=force, where=where)

    # -- operators' calls (``_operations``) ----------------------------------------------

    def dead_letters(self, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self._operations.dead_letters(reason, limit)

    def record_dead_letters(self, reason: str, raws: list[bytes], why: str, uncounted: int = 0) -> int:
        return self._operations.record_dead_letters(reason, raws, why, uncounted)

    def replay_dead_letters(self, ids: list[str] | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        self.ensure_started()
        return self._operations.replay_dead_letters(ids, reason)

    def operator_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._operations.operator_log(limit)

    def record_operation(self, action: str, who: str, why: str, auth: str = RUNTIME) -> None:
        self._operations.record(action, who, why, auth)  # one done elsewhere (a supervisor's deploy)

    def review_actions(self, who: str, count: int | None = None, *, auth: str = RUNTIME) -> dict[str, Any]:
        return self._operations.review(self.gateway, who, count, auth)

    def reset_breaker(self, name: str, who: str, *, auth: str = RUNTIME) -> dict[str, Any]:
        return self._operations.reset_breaker(self.gateway, name, who, auth)

    def quarantine(self, why: str, who: str = "supervisor", *, auth: str = RUNTIME) -> dict[str, Any]:
        self._operations.quarantine(why, who, auth)
        return self.status()

    def release(self, who: str = "operator", why: str = "", *, auth: str = RUNTIME) -> dict[str, Any]:
        self._operations.release(who, why, auth)
        return self.status()

    def halt(self, who: str, why: str, *, grace: float = 2.0, auth: str = RUNTIME) -> dict[str, Any]:
        self._operations.halt(who, why, grace=grace, auth=auth)
        return self.status()

    def unhalt(self, who: str, why: str = "", *, auth: str = RUNTIME) -> dict[str, Any]:
        self._operations.unhalt(who, why, auth)
        return self.status()

    # -- stop ---------------------------------------------------------------------

    def stop(self, *, checkpoint: bool = True) -> dict[str, Any]:
        """Drain, run ``on_stop``, ship, take a final ``checkpoint`` (else ship only), close.  Idempotent."""
        with self._lock:
            if self._lifecycle.state is AgentState.STOPPED:
                return self.status()
            was_running = self._lifecycle.state is AgentState.RUNNING
            fenced = self._lifecycle.state is AgentState.FENCED
            self._lifecycle.set(AgentState.DRAINING, self._lifecycle.failure)
            if was_running:
                try:
                    self._inbox.run_hook(self.agent.on_stop)
                except Exception:
                    log.exception("agent %s: on_stop raised; stopping anyway", self.agent_id)
            if not fenced:  # its last sends delivered first: an agent stopped for good would keep them
                self.dispatcher.drain(self.spec.config.stop_drain)
            self.dispatcher.stop()
            self._background.stop()
            if not fenced:  # a replaced incarnation publishes nothing, not even a last checkpoint
                self._background.final_checkpoint("stop", ship_only=not checkpoint)  # a failure: degraded, not raised
            status = self.status()
            self._lifecycle.set(AgentState.STOPPED, self._lifecycle.failure)
            status["state"] = self._lifecycle.state.value
            self.close_files()
        if not self.stopped.done():
            self.stopped.set_result(status)
        return status

    def close_files(self) -> None:
        self._background.stop(wait=False)
        try:
            if self.audit:
                self.audit.close()
            self.incarnation_files.close()
        finally:
            self._invoker.close()
