"""Committing a handler's transaction: one LMDB commit, SYNC gating, at-most-once sends.

:class:`Committer` turns what a :class:`~runtime._transaction.Transaction`
took into one LMDB transaction: the state ops, the records the inbox added,
and the durable sends staged into the outbox (``_outbox.Dispatcher``).

Invariants:

* A replaced incarnation commits nothing (``Fence.check``: ``Fenced``).
* Under SYNC durability nothing a commit sent leaves before its journal is
  shipped, and the caller's reply waits for that too: a receiver never acts on
  a message its sender, should its node be lost now, would not remember
  sending; an acknowledged message is never lost with the process.  When the
  shipping fails the commit stands and ``NotDurable`` says so (asking again
  with the same message id is safe).
* AT_MOST_ONCE sends are not in the outbox: each is one call, made after the
  commit, never retried; one that cannot go (window full, no transport, the
  agent halted) becomes a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocols import Delivery, Envelope, WireError, encode_envelope

from ._config import AgentConfig, Durability
from ._deadletters import dead_letter_op, reason_for
from ._fence import Fence
from ._journal import Shipper
from ._lifecycle import AgentState, Lifecycle
from ._metrics import AgentMetrics
from ._outbox import Dispatcher
from ._state import Layer
from ._store import LmdbStore, Op
from .exceptions import AgentNotRunning, CheckpointError, MailboxFull, NotDurable

__all__ = ["Committer"]


class Committer:
    """The host's one way to commit (see module docstring)."""

    def __init__(self, *, agent_id: str, config: AgentConfig, epoch: int, store: LmdbStore, fence: Fence,
                 dispatcher: Dispatcher, shipper: Shipper, lifecycle: Lifecycle, metrics: AgentMetrics,
                 resolve: Callable[[str], Any] | None) -> None:
        self.agent_id = agent_id
        self._config = config
        self._sync = config.durability is Durability.SYNC
        self._epoch = epoch
        self._store = store
        self._fence = fence
        self._dispatcher = dispatcher
        self._shipper = shipper
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._resolve = resolve
        self._direct: dict[str, list[Any]] = {}  # at-most-once sends in flight, per recipient

    def commit(self, layer: Layer, extra: list[Op], now: float) -> int:
        """One LMDB transaction for a layer's ops, ``extra`` ops and its outbox sends; returns its seq."""
        self._fence.check("commit")  # a replaced incarnation's changes are refused (Fenced)
        durable = [s for s in layer.sends if s[1].delivery is not Delivery.AT_MOST_ONCE]
        out_ops, seqs = self._dispatcher.stage(durable, now) if durable else ([], {})
        ops = layer.ops + extra + out_ops if (extra or out_ops) else layer.ops
        seq = self._store.commit(ops, now=now) if ops else self._store.seq
        sync = self._sync
        self._dispatcher.published(seqs, at=seq if sync else None)
        once = []  # at-most-once sends: not in the outbox, sent once below
        if len(durable) < len(layer.sends):
            once = [s for s in layer.sends if s[1].delivery is Delivery.AT_MOST_ONCE]
        if sync:
            try:
                # Every reply waits for this, even one that committed nothing (a
                # duplicate): what it acknowledges may not have been shipped yet.
                self.ship_until(seq)  # then releases what the commit sent (``on_shipped``)
            except NotDurable as exc:
                if once:
                    self._store.commit([dead_letter_op("not_durable", exc, raw=encode_envelope(env), env=env)
                                        for _, env in once])
                raise
        for recipient, env in once:
            self._send_once(recipient, env)
        return seq

    def ship_until(self, seq: int) -> None:
        """Ship the journal up to ``seq`` now (SYNC); NotDurable if the checkpoint store refuses."""
        try:
            self._shipper.ship_until(seq)
        except CheckpointError as exc:
            raise NotDurable(
                f"agent {self.agent_id!r} handled and committed up to seq {seq}, but could not ship it "
                f"to the checkpoint store (SYNC durability): {exc.message}; asking again with the same "
                "message id is safe", agent_id=self.agent_id, seq=seq) from exc

    def _send_once(self, recipient: str, env: Envelope) -> None:
        """At-most-once: one call, no retry; refused at once if the window is full."""
        if self._lifecycle.state is AgentState.HALTED:
            err = AgentNotRunning(f"agent {self.agent_id!r} is halted: {env.type} to {recipient!r} not sent")
            self._store.commit([dead_letter_op("not_running", err, raw=encode_envelope(env), env=env)])
            return
        window = self._config.window
        try:
            if self._resolve is None:
                raise MailboxFull(f"no transport to {recipient!r} in this process")
            inflight = self._direct.setdefault(recipient, [])
            if len(inflight) >= window:
                import ray

                done, inflight[:] = ray.wait(inflight, num_returns=len(inflight), timeout=0)
            if len(inflight) >= window:
                raise MailboxFull(
                    f"{len(inflight)} at-most-once messages to {recipient!r} are unanswered "
                    f"(window {window}); {env.type} dropped",
                    recipient=recipient,
                )
            env.epoch = self._epoch
            inflight.append(self._resolve(recipient).deliver.remote(encode_envelope(env)))
        except Exception as exc:
            err = exc if isinstance(exc, WireError) else MailboxFull(f"cannot send to {recipient!r}: {exc}")
            self._metrics.outcome("send_dropped")
            self._store.commit([dead_letter_op(reason_for(err), err, raw=encode_envelope(env), env=env)])
