"""Operators' calls on an agent: dead letters and their replay, quarantine, the kill switch.

Part of :class:`runtime._core.AgentCore` (a mixin: it uses the core's store,
handling lock, dispatcher and lifecycle).  Invariants: a halt is recorded in
the journaled ``control`` table before it is acknowledged, so it outlives the
incarnation; quarantine and halt keep every byte of state, outbox and dead
letters; a replayed dead letter is removed only once it was handled or
re-queued.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from protocols import Envelope, ProtocolError, decode_envelope

from ._codec import pack, unpack
from ._deadletters import REASONS, dead_letter_op, list_dead_letters
from ._lifecycle import AgentState
from ._store import DELETE, PUT, Op
from .exceptions import MailboxFull, NotDurable

__all__ = ["HALT_KEY", "Operations"]

log = logging.getLogger("garrison.agent")

#: Where a pulled kill switch is recorded: the journaled ``control`` table,
#: so it is checkpointed, shipped and restored with everything else.
HALT_KEY = b"halted"


class Operations:
    """Dead letters, quarantine and the kill switch (see module docstring)."""

    def dead_letters(self, reason: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [d.model_dump() for d in list_dead_letters(self.store, reason=reason, limit=limit)]

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
                env: Envelope | None = decode_envelope(raw, max_bytes=self.config.max_message_bytes)
            except ProtocolError:
                env = None
            ops.append(dead_letter_op(reason, err, raw=raw, env=env, now=now))
        if uncounted:
            more = MailboxFull(f"{why}; {uncounted} more were given up without their envelopes",
                               agent_id=self.agent_id)
            ops.append(dead_letter_op(reason, more, attempts=uncounted, now=now))
        if ops:
            self.store.commit(ops, now=now)
            self.metrics.messages.labels(self.agent_id, reason).inc(len(raws) + uncounted)
        return len(ops)

    def replay_dead_letters(self, ids: list[str] | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        """Deliver dead letters again (by id, or all of a reason); each is removed once replayed.

        A letter this agent refused is handled again here, without its old
        deadline; one this agent failed to send goes back into its outbox.
        """
        self.ensure_started()
        wanted = {bytes.fromhex(i) for i in ids} if ids else None
        results = []
        with self._lock:
            for letter in list_dead_letters(self.store, reason=reason, limit=1_000_000):
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
                        self.state.begin()
                        self.state.stage_send(env.recipient, env)
                        self._commit(self.state.take(), [delete], time.time())
                        results.append({"id": letter.id, "ok": True, "to": env.recipient})
                        continue
                    env.reply_to = "replay"  # the operator waits for the outcome: no new dead letter
                    ok = unpack(self._deliver_one(env, letter.envelope))[0] == 0
                except NotDurable as exc:  # committed here, not shipped: stop, say so
                    results.append({"id": letter.id, "ok": False, "error": f"{exc.code}: {exc.message}"})
                    break
                if ok:
                    self.store.commit([delete])
                results.append({"id": letter.id, "ok": ok})
        return results

    def quarantine(self, why: str) -> dict[str, Any]:
        """Stop handling (new messages are refused and kept as dead letters); keep state; checkpoint.

        The process stays up for investigation; ``release`` resumes it.  A
        handler already running (a hung one, say) is not interrupted.
        """
        if self.lifecycle in (AgentState.RUNNING, AgentState.QUARANTINED):
            self.lifecycle = AgentState.QUARANTINED
            self.failure = f"quarantined: {why}"
            self._final_checkpoint("quarantine", force=True)  # a failure is recorded, not raised
        return self.status()

    def release(self) -> dict[str, Any]:
        """Resume a quarantined agent (no effect in any other state)."""
        if self.lifecycle is AgentState.QUARANTINED:
            self.failure = None
            self.lifecycle = AgentState.RUNNING
        return self.status()

    def halt(self, who: str, why: str, *, grace: float = 2.0) -> dict[str, Any]:
        """Kill switch: no handler starts from now on, nothing leaves; final checkpoint.

        The halt is recorded in the agent's state (who, why, when), so a new
        incarnation, on this node or another, starts HALTED too until an
        operator calls ``unhalt``.  A handler already running gets ``grace``
        seconds to finish, so its commit is in the final checkpoint; its
        outgoing messages stay in the outbox either way.
        """
        if self.lifecycle in (AgentState.STOPPED, AgentState.HALTED, AgentState.FENCED):
            return self.status()
        self.lifecycle = AgentState.HALTED
        self.failure = f"halted by {who}: {why}"
        self.dispatcher.stop()
        acquired = self._lock.acquire(timeout=grace)
        try:
            self.store.commit([Op("control", PUT, HALT_KEY, pack({"who": who, "why": why, "time": time.time()}))])
        finally:
            if acquired:
                self._lock.release()
        self._final_checkpoint("halt", force=True)  # halted even if the store refuses: the record is local
        log.warning("agent %s halted by %s: %s", self.agent_id, who, why)
        return self.status()

    def unhalt(self, who: str) -> dict[str, Any]:
        """Lift the kill switch: clear the record and resume handling and sending."""
        if self.lifecycle is AgentState.HALTED:
            with self._lock:
                self.store.commit([Op("control", DELETE, HALT_KEY, None)])
                self.failure = None
                self.lifecycle = AgentState.RUNNING
                self.dispatcher.resume()
            log.warning("agent %s resumed by %s", self.agent_id, who)
        return self.status()
