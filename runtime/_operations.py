"""Operators' calls on an agent: dead letters and their replay, quarantine, the kill switch.

:class:`Operations` is given the store, the handling lock, the transaction,
the inbox (a replayed letter is handled as a message), the committer, the
dispatcher, the lifecycle and the final checkpoint it needs.  Invariants: a halt and a
quarantine are recorded in the journaled ``control`` table before they are
acknowledged, so they outlive the incarnation (a restart, on this node or
another, comes back HALTED or QUARANTINED until ``unhalt`` or ``release``);
each operator action (quarantine, release, halt, unhalt) leaves a record
with who, why and when in the same commit (``operator_log``); quarantine
and halt keep every byte of state, outbox and dead letters; a replayed dead
letter is removed only once it was handled or re-queued.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from protocols import Envelope, ProtocolError, decode_envelope

from ._codec import pack, unpack
from ._deadletters import REASONS, dead_letter_op, list_dead_letters
from ._committer import Committer
from ._config import AgentConfig
from ._inbox import Inbox
from ._lifecycle import AgentState, Lifecycle
from ._metrics import AgentMetrics
from ._outbox import Dispatcher
from ._audit import audit_op
from ._gatekeeper import RUNTIME
from ._store import DELETE, DELETE_RANGE, PUT, LmdbStore, Op
from ._transaction import Transaction
from .exceptions import MailboxFull, NotDurable

__all__ = ["ACTIONS_KEPT", "HALT_KEY", "QUARANTINE_KEY", "Operations"]

log = logging.getLogger("garrison.agent")

#: Where a pulled kill switch is recorded: the journaled ``control`` table,
#: so it is checkpointed, shipped and restored with everything else.
HALT_KEY = b"halted"
#: Where a quarantine is recorded (same table, same reasons).
QUARANTINE_KEY = b"quarantined"
#: Prefix of the operator log's records: ``_ACTION`` + time in ns (big-endian) + 4 random bytes.
_ACTION = b"action\x00"
_NS = struct.Struct(">Q")
#: Operator log records kept per agent; the oldest are trimmed in the commit that adds one.
ACTIONS_KEPT = 200


def _action_ops(store: Any, audited: bool, action: str, who: str, why: str, now: float, auth: str) -> list[Op]:
    """Ops adding one operator-log record (and trimming the oldest past ``ACTIONS_KEPT``), and its audit record.

    ``auth`` says how ``who`` was established (``runtime._gatekeeper``): ``ed25519:<key id>``,
    ``unverified`` (free text) or ``runtime`` (the runtime's own policy acted).
    """
    key = _ACTION + _NS.pack(int(now * 1e9)) + os.urandom(4)
    ops = [Op("control", PUT, key, pack({"action": action, "who": who, "auth": auth, "why": why, "time": now}))]
    if audited:
        ops.append(audit_op("operator", {"action": action, "who": who, "auth": auth, "why": why}, now))
    keys = [k for k, _ in store.scan("control", _ACTION)]
    if len(keys) >= ACTIONS_KEPT:
        ops.append(Op("control", DELETE_RANGE, keys[0], keys[len(keys) - ACTIONS_KEPT + 1]))
    return ops


class Operations:
    """Dead letters, quarantine and the kill switch (see module docstring).

    Each state change returns nothing: the host answers with its status.
    """

    def __init__(self, *, agent_id: str, config: AgentConfig, store: LmdbStore, lifecycle: Lifecycle,
                 lock: threading.RLock, txn: Transaction, inbox: Inbox, committer: Committer,
                 dispatcher: Dispatcher, metrics: AgentMetrics,
                 final_checkpoint: Callable[..., Any], audited: bool = False) -> None:
        self.agent_id = agent_id
        self._audited = audited  # operator actions also go to the audit log (``_audit``)
        self._on_trip = config.on_trip
        self._max_bytes = config.max_message_bytes
        self._store = store
        self._lifecycle = lifecycle
        self._lock = lock
        self._txn = txn
        self._inbox = inbox
        self._committer = committer
        self._dispatcher = dispatcher
        self._metrics = metrics
        #: ``final_checkpoint(why, force=...)``: tried once; a failure is recorded (degraded), not raised.
        self._final_checkpoint = final_checkpoint

    def dead_letters(self, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [d.model_dump() for d in list_dead_letters(self._store, reason=reason, limit=limit)]

    def record_dead_letters(self, reason: str, raws: list[bytes], why: str, uncounted: int = 0) -> int:
        """Record letters another party gave up delivering here (a driver's held-tell overflow); one commit.

        ``uncounted`` more were given up without their envelopes: one more
        letter says how many.  Returns how many letters were recorded.
        """
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}; known: {sorted(REASONS)}")
        err = MailboxFull(why, agent_id=self.agent_id)
        now = time.time()
        ops = []
        for raw in raws:
            try:
                env: Envelope | None = decode_envelope(raw, max_bytes=self._max_bytes)
            except ProtocolError:
                env = None
            ops.append(dead_letter_op(reason, err, raw=raw, env=env, now=now))
        if uncounted:
            more = MailboxFull(f"{why}; {uncounted} more were given up without their envelopes",
                               agent_id=self.agent_id)
            ops.append(dead_letter_op(reason, more, attempts=uncounted, now=now))
        if ops:
            self._store.commit(ops, now=now)
            self._metrics.outcome(reason, len(raws) + uncounted)
        return len(ops)

    def replay_dead_letters(self, ids: list[str] | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        """Deliver dead letters again (by id, or all of a reason); each is removed once replayed.

        A letter this agent refused is handled again here, without its old
        deadline; one this agent failed to send goes back into its outbox.
        """
        wanted = {bytes.fromhex(i) for i in ids} if ids else None
        results = []
        with self._lock:
            for letter in list_dead_letters(self._store, reason=reason, limit=1_000_000):
                key = bytes.fromhex(letter.id)
                if wanted is not None and key not in wanted:
                    continue
                if letter.envelope is None:
                    results.append({"id": letter.id, "ok": False, "error": "no envelope to replay (not decodable)"})
                    continue
                try:
                    env = decode_envelope(letter.envelope)
                except ProtocolError as exc:
                    results.append({"id": letter.id, "ok": False, "error": f"{exc.code}: {exc.message}"})
                    continue
                # An operator's replay is deliberate: no old deadline, and no epoch to fence.
                env.deadline, env.seq, env.attempt, env.epoch = None, None, letter.attempts + 1, None
                delete = Op("deadletters", DELETE, key, None)
                try:
                    if env.recipient != self.agent_id:
                        self._txn.begin()
                        self._txn.send(env.recipient, env)
                        self._txn.record(delete)
                        self._committer.commit(*self._txn.take(), time.time())
                        results.append({"id": letter.id, "ok": True, "to": env.recipient})
                        continue
                    env.reply_to = "replay"  # the operator waits for the outcome: no new dead letter
                    ok = unpack(self._inbox.deliver_one(env, letter.envelope))[0] == 0
                except NotDurable as exc:  # committed here, not shipped: stop, say so
                    results.append({"id": letter.id, "ok": False, "error": f"{exc.code}: {exc.message}"})
                    break
                if ok:
                    self._store.commit([delete])
                results.append({"id": letter.id, "ok": ok})
        return results

    def operator_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` operator actions on this agent (quarantine, release, halt, unhalt, review,
        reset_breaker), oldest first."""
        rows = self._store.scan("control", _ACTION)
        return [unpack(v) for _, v in rows[-limit:]] if limit > 0 else []

    def review(self, gateway: Any, who: str, count: int | None, auth: str = RUNTIME) -> dict[str, Any]:
        """``who`` reviewed ``count`` (None: all) of ``gateway``'s medium-risk actions flagged for review."""
        with self._lock:  # the gateway is the handling thread's between messages
            left = gateway.review(count)
            self.record("review", who, f"reviewed {'all' if count is None else count} flagged medium-risk "
                                       f"actions; {left} left", auth)
        return {"unreviewed_medium": left}

    def reset_breaker(self, gateway: Any, name: str, who: str, auth: str = RUNTIME) -> dict[str, Any]:
        """``who`` closes ``gateway``'s breaker ``name`` (recorded in the operator log)."""
        with self._lock:
            status = gateway.reset_breaker(name, who)
            self.record("reset_breaker", who, f"{name} breaker closed", auth)
            return status

    def record(self, action: str, who: str, why: str, auth: str = RUNTIME) -> None:
        """Add an operator action that changes no lifecycle (a review, a breaker reset) to the operator log."""
        now = time.time()
        self._store.commit(_action_ops(self._store, self._audited, action, who, why, now, auth), now=now)
        log.warning("agent %s: %s by %s (%s): %s", self.agent_id, action, who, auth, why)

    def quarantine(self, why: str, who: str = "supervisor", auth: str = RUNTIME) -> None:
        """Stop handling (new messages are refused and kept as dead letters); keep state; checkpoint.

        Recorded (who, why, when) before it returns, so a restart comes back
        QUARANTINED.  The process stays up for investigation; ``release``
        resumes it.  A handler already running (a hung one, say) is not
        interrupted.  No effect unless RUNNING or QUARANTINED.
        """
        if self._lifecycle.state in (AgentState.RUNNING, AgentState.QUARANTINED):
            self._lifecycle.set(AgentState.QUARANTINED, f"quarantined: {why}")
            now = time.time()
            record = pack({"who": who, "why": why, "time": now})
            self._store.commit([Op("control", PUT, QUARANTINE_KEY, record),
                               *_action_ops(self._store, self._audited, "quarantine", who, why, now, auth)], now=now)
            self._final_checkpoint("quarantine", force=True)  # a failure is recorded, not raised
            log.warning("agent %s quarantined by %s: %s", self.agent_id, who, why)

    def release(self, who: str = "operator", why: str = "", auth: str = RUNTIME) -> None:
        """Lift a quarantine: clear its record; a QUARANTINED agent resumes handling.

        No effect if there is no quarantine.  A HALTED agent stays halted (its
        quarantine is lifted, so ``unhalt`` then resumes it to RUNNING).
        """
        if self._lifecycle.state in (AgentState.STOPPED, AgentState.FENCED):
            return
        if self._lifecycle.state is not AgentState.QUARANTINED and self._store.get("control", QUARANTINE_KEY) is None:
            return
        now = time.time()
        self._store.commit([Op("control", DELETE, QUARANTINE_KEY, None),
                           *_action_ops(self._store, self._audited, "release", who, why, now, auth)], now=now)
        if self._lifecycle.state is AgentState.QUARANTINED:
            self._lifecycle.set(AgentState.RUNNING)
        log.warning("agent %s released by %s: %s", self.agent_id, who, why)

    def tripped(self, name: str, why: str, halt: bool | None = None) -> None:
        """A breaker of the gateway opened: with ``on_trip="halt"`` (or ``halt``: the behaviour policy's
        pause), pull this agent's kill switch.

        Called from inside a handler, which holds the handling lock: the halt
        runs on its own thread and takes effect once that handler is done.
        """
        if halt or (halt is None and self._on_trip == "halt"):
            who, what = ("behaviour-policy", why) if name == "behaviour" else ("breaker", f"{name} breaker tripped: {why}")
            threading.Thread(target=self.halt, args=(who, what), name=f"garrison-trip-{self.agent_id}",
                             daemon=True).start()

    def halt(self, who: str, why: str, *, grace: float = 2.0, auth: str = RUNTIME) -> None:
        """Kill switch: no handler starts from now on, nothing leaves; final checkpoint.

        The halt is recorded in the agent's state (who, why, when), so a new
        incarnation, on this node or another, starts HALTED too until an
        operator calls ``unhalt``.  A handler already running gets ``grace``
        seconds to finish, so its commit is in the final checkpoint; its
        outgoing messages stay in the outbox either way.
        """
        if self._lifecycle.state in (AgentState.STOPPED, AgentState.HALTED, AgentState.FENCED):
            return
        self._lifecycle.set(AgentState.HALTED, f"halted by {who}: {why}")
        self._dispatcher.stop()
        acquired = self._lock.acquire(timeout=grace)
        try:
            now = time.time()
            self._store.commit([Op("control", PUT, HALT_KEY, pack({"who": who, "why": why, "time": now})),
                               *_action_ops(self._store, self._audited, "halt", who, why, now, auth)], now=now)
        finally:
            if acquired:
                self._lock.release()
        self._final_checkpoint("halt", force=True)  # halted even if the store refuses: the record is local
        log.warning("agent %s halted by %s: %s", self.agent_id, who, why)

    def unhalt(self, who: str, why: str = "", auth: str = RUNTIME) -> None:
        """Lift the kill switch: clear the record and resume sending; handling resumes unless quarantined."""
        if self._lifecycle.state is AgentState.HALTED:
            with self._lock:
                now = time.time()
                self._store.commit([Op("control", DELETE, HALT_KEY, None),
                                   *_action_ops(self._store, self._audited, "unhalt", who, why, now, auth)], now=now)
                quarantined = self._store.get("control", QUARANTINE_KEY)
                if quarantined is None:
                    self._lifecycle.set(AgentState.RUNNING)
                else:  # halted while quarantined: back to the quarantine, which has its own release
                    self._lifecycle.set(AgentState.QUARANTINED, f"quarantined: {unpack(quarantined)['why']}")
                self._dispatcher.resume()
            log.warning("agent %s resumed by %s: %s", self.agent_id, who, why)
